"""The GraphSAGE aggregator input: the CPU path (torch's CSR product forward, one compiled pass
back) gives the plain torch expression's values and own-table gradients to the bit, and the
neighbour-table gradient in the documented order of roundings (each product, then each sum)."""

import numpy as np
import pytest
import torch

from hashbench.core.sage import mean_operator, sage_input, sage_input_torch


def grads(fn, own, neighbour_table, own_index, neighbours, g):
    own, neighbour_table = own.clone().requires_grad_(), neighbour_table.clone().requires_grad_()
    out = fn(own, own_index, neighbour_table, neighbours)
    return (out, *torch.autograd.grad(out, (own, neighbour_table), g))


@pytest.mark.parametrize("rows, fanout, n_own, n_neighbours", [(300, 10, 40, 25), (64, 5, 7, 300), (5, 3, 2, 2)])
def test_sage_input_is_gather_sparse_mean_and_cat_bit_for_bit(rows, fanout, n_own, n_neighbours):
    rng = np.random.default_rng(rows)
    own = torch.randn(n_own, 6)
    neighbour_table = torch.randn(n_neighbours, 6)
    own_index = rng.integers(-1, n_own, rows)  # repeats (summed in order) and −1 (the last row)
    neighbours = rng.integers(-1, n_neighbours, (rows, fanout))  # −1: missing; repeats within a row
    neighbours[0] = -1  # a node without neighbours: a zero mean
    neighbours[1] = neighbours[1, 0]  # one neighbour drawn `fanout` times
    g = torch.randn(rows, 12)
    got = grads(sage_input, own, neighbour_table, own_index, neighbours, g)
    want = grads(sage_input_torch, own, neighbour_table, own_index, neighbours, g)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # values, own-table gradient
    assert torch.equal(got[0][0, 6:], torch.zeros(6))
    # the neighbour-table gradient: 0 + w₁g₁ + w₂g₂ + … over output rows ascending, every
    # product and every sum rounded to float32 (numpy's separate multiply and add)
    s, _ = mean_operator(neighbours, n_neighbours)
    indptr, cols, weights = s.crow_indices().numpy(), s.col_indices().numpy(), s.values().numpy()
    upper = g[:, 6:].numpy()
    documented = np.zeros((n_neighbours, 6), np.float32)
    for r in range(rows):
        for e in range(indptr[r], indptr[r + 1]):
            documented[cols[e]] = documented[cols[e]] + weights[e] * upper[r]
    assert np.array_equal(got[2].numpy(), documented)
    # torch's Sᵀ product sums the same terms; on an AMD EPYC it matched to the bit, on an Intel
    # Xeon MKL fuses multiply-add and the last bits differ (≤ 4.8e-7 here)
    assert torch.allclose(got[2], want[2], rtol=1e-6, atol=1e-6)


def test_sage_input_is_the_neighbour_mean():
    own, table = torch.arange(6.0).view(3, 2), torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    out = sage_input(own, np.array([2, 0]), table, np.array([[0, 1, 1, -1], [-1, -1, -1, -1]]))
    assert torch.allclose(out, torch.tensor([[4.0, 5.0, 7 / 4, 3.0], [0.0, 1.0, 0.0, 0.0]]))
