"""core.bags.sum_bag: torch's sum-mode embedding bag, forward and weight gradient to the bit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hashbench.core.bags import sum_bag


def zero_one_rows(rows: int, width: int, mean_degree: int, seed: int):
    """(indices, offsets) of a random 0/1 matrix's rows: distinct sorted columns, some rows empty."""
    rng = np.random.default_rng(seed)
    degrees = np.minimum(rng.geometric(1 / mean_degree, rows), width)
    degrees[::7] = 0
    indices = np.concatenate([np.sort(rng.choice(width, d, replace=False)) for d in degrees])
    offsets = np.zeros(rows, dtype=np.int64)
    np.cumsum(degrees[:-1], out=offsets[1:])
    return torch.from_numpy(indices), torch.from_numpy(offsets)


# small bags take torch's comparison sort, large ones (>= 32,768 positions) its radix sort
@pytest.mark.parametrize("rows, width, mean_degree, dim", [(40, 60, 4, 8), (200, 50, 10, 1), (3000, 900, 20, 16)])
def test_sum_bag_equals_torch_to_the_bit(rows, width, mean_degree, dim):
    indices, offsets = zero_one_rows(rows, width, mean_degree, seed=rows)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(width, dim, generator=gen)
    grad = torch.randn(rows, dim, generator=gen) * torch.rand(rows, 1, generator=gen)
    grads = []
    for bag in (lambda w: F.embedding_bag(indices, w, offsets, mode="sum"), lambda w: sum_bag(w, indices, offsets)):
        w = weight.clone().requires_grad_()
        out = bag(w)
        out.backward(grad)
        grads.append((out.detach(), w.grad))
    (out_torch, grad_torch), (out_here, grad_here) = grads
    assert torch.equal(out_here, out_torch)
    assert torch.equal(grad_here, grad_torch)
