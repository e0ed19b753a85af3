"""LazyAdam (HashRec's optimiser) is torch's SparseAdam, bit for bit, only faster."""


import pytest
import torch
import torch.nn.functional as F

from hashbench.core.optim import LazyAdam


def _train(optimiser_class, steps=6, lr=1e-2, state=None, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    users = torch.nn.Parameter(torch.randn(50, 8, generator=gen, dtype=dtype))
    items = torch.nn.Parameter(torch.randn(40, 8, generator=gen, dtype=dtype))
    opt = optimiser_class([users, items], lr=lr)
    if state is not None:
        opt.load_state_dict(state)
    for _ in range(steps):
        # duplicates within a batch and the same table gathered twice (positives and negatives)
        u, i, j = (torch.randint(n, (64,), generator=gen) for n in (50, 40, 40))
        pu, qi, qj = (F.embedding(idx, table, sparse=True) for idx, table in ((u, users), (i, items), (j, items)))
        loss = -F.logsigmoid((torch.tanh(3 * pu) * (torch.tanh(3 * qi) - torch.tanh(3 * qj))).sum(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return users.detach(), items.detach(), opt


# float32 takes the fused numba pass, float64 the dense-block torch version
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lazy_adam_gives_bitwise_the_parameters_and_state_of_sparse_adam(dtype):
    *reference, ref_opt = _train(torch.optim.SparseAdam, dtype=dtype)
    *ours, opt = _train(LazyAdam, dtype=dtype)
    for a, b in zip(reference, ours):
        assert torch.equal(a, b)
    for p_ref, p in zip(ref_opt.state.values(), opt.state.values()):
        assert p_ref["step"] == p["step"] and torch.equal(p_ref["exp_avg"], p["exp_avg"])
        assert torch.equal(p_ref["exp_avg_sq"], p["exp_avg_sq"])


def test_lazy_adam_leaves_rows_outside_the_batch_untouched():
    table = torch.nn.Parameter(torch.randn(10, 4))
    before = table.detach().clone()
    opt = LazyAdam([table], lr=0.1)
    F.embedding(torch.tensor([1, 1, 7]), table, sparse=True).sum().backward()
    opt.step()
    changed = (table.detach() != before).any(1)
    assert changed.tolist() == [i in (1, 7) for i in range(10)]


def test_lazy_adam_refuses_a_dense_gradient():
    table = torch.nn.Parameter(torch.randn(10, 4))
    (table ** 2).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        LazyAdam([table]).step()
