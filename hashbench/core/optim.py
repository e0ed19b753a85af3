"""Optimisers the methods' reference code uses and torch does not offer at speed.

`LazyAdam` is TensorFlow's LazyAdam (CIGAR/HashRec's optimiser), which torch implements as
`torch.optim.SparseAdam`: only the rows a batch gathered get their moments and values
updated, with the bias correction of the global step. SparseAdam does that through sparse
tensor algebra (coalesce, sparse_mask, sparse + dense adds), which on CPU cost ~73 ms of a
~130 ms HashRec step on Gowalla. The same arithmetic, operation for operation, in two numba
passes over the touched rows (CPU float32; other devices and dtypes take the dense-block torch
version below) costs a fraction of that and gives bitwise the same parameters
(tests/test_optim.py): every operation is an IEEE float32 add, multiply or divide of the same
operands in the same order (numba does not fuse them: no fastmath), and the square root is
torch's own (its float32 sqrt is not always the correctly rounded one).
Its state is SparseAdam's, so checkpoints written with one load into the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit


@njit(cache=True, nogil=True)
def _update_moments(sorted_index, order, values, exp_avg, exp_avg_sq, one_minus_beta1, one_minus_beta2,
                    rows, second_moment):
    """SparseAdam's moment updates of each touched row, in one pass (float32 throughout).

    The gradient of a row is the left fold 0 + g₁ + g₂ + … of its entries in `order` (torch's
    sort of the indices, as coalesce sums them); then u = (g − m)(1 − β₁), m += u and
    w = (g² − v)(1 − β₂), v += w. Writes the touched rows (ascending) and their new v into
    `rows` / `second_moment`; returns how many."""
    dim = values.shape[1]
    grad = np.zeros(dim, dtype=np.float32)
    start, n, count = 0, sorted_index.shape[0], 0
    while start < n:
        row, end = sorted_index[start], start
        grad[:] = 0.0
        while end < n and sorted_index[end] == row:
            source = order[end]
            for d in range(dim):
                grad[d] += values[source, d]
            end += 1
        for d in range(dim):
            g, m_old, v_old = grad[d], exp_avg[row, d], exp_avg_sq[row, d]
            exp_avg[row, d] = m_old + (g - m_old) * one_minus_beta1
            v_new = v_old + (g * g - v_old) * one_minus_beta2
            exp_avg_sq[row, d] = v_new
            second_moment[count, d] = v_new
        rows[count] = row
        count += 1
        start = end
    return count


@njit(cache=True, nogil=True)
def _step_rows(rows, exp_avg, denom, param, neg_step_size):
    """p += −step · m / denom on the touched rows (m already updated)."""
    for k in range(rows.shape[0]):
        row = rows[k]
        for d in range(param.shape[1]):
            param[row, d] += np.float32(neg_step_size * np.float32(exp_avg[row, d] / denom[k, d]))


def summed_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a sparse row gradient touches (ascending) and each row's gradient: bitwise
    what `grad.coalesce()` gives. Coalesce orders the entries with torch's (unstable) sort and
    sums each row's duplicates left to right in that order; so does this, into dense rows."""
    index, values = grad._indices()[0], grad._values()
    ordered, order = torch.sort(index)
    rows, counts = torch.unique_consecutive(ordered, return_counts=True)
    position = torch.repeat_interleave(torch.arange(len(rows), device=index.device), counts)
    summed = values.new_zeros((len(rows), *values.shape[1:]))
    summed.index_add_(0, position, values.index_select(0, order))  # 0 + g1 + g2 + …: the same fold
    return rows, summed


def _fused(param, grad, state, group) -> bool:
    """Whether the numba pass applies: CPU float32 contiguous tensors, not maximising."""
    tensors = (param, grad._values(), state["exp_avg"], state["exp_avg_sq"])
    return (not group.get("maximize", False) and all(t.device.type == "cpu" and t.dtype == torch.float32
                                                      for t in tensors)
            and all(t.is_contiguous() for t in (param, state["exp_avg"], state["exp_avg_sq"])) and param.dim() == 2)


def _step_fused(param, state, beta1, beta2, eps, step_size) -> None:
    """The update in two numba passes around torch's sqrt (CPU float32)."""
    index, values = param.grad._indices()[0], param.grad._values()
    sorted_index, order = torch.sort(index)  # coalesce's order of summation
    f32 = np.float32
    rows = np.empty(len(index), dtype=np.int64)
    second_moment = np.empty((len(index), param.shape[1]), dtype=np.float32)
    n = _update_moments(sorted_index.numpy(), order.numpy(), values.contiguous().numpy(), state["exp_avg"].numpy(),
                        state["exp_avg_sq"].numpy(), f32(1 - beta1), f32(1 - beta2), rows, second_moment)
    # torch's own float32 sqrt: it is not always the correctly rounded one numba computes
    denom = torch.from_numpy(second_moment[:n]).sqrt_().add_(eps)
    _step_rows(rows[:n], state["exp_avg"].numpy(), denom.numpy(), param.detach().numpy(), f32(-step_size))


def _step_blocks(param, state, beta1, beta2, eps, step_size, maximize) -> None:
    """The update with torch operations on dense blocks of the touched rows (any device/dtype)."""
    rows, grad = summed_rows(param.grad)
    if maximize:
        grad = -grad
    if grad.numel() == 0:
        return
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    # SparseAdam's order of operations: old += (1 − b)(new − old), then numer/denom from the
    # update and the old values (so the parameters come out bitwise equal)
    old_exp_avg = exp_avg.index_select(0, rows)
    exp_avg_update = grad.sub(old_exp_avg).mul_(1 - beta1)
    exp_avg.index_add_(0, rows, exp_avg_update)
    old_exp_avg_sq = exp_avg_sq.index_select(0, rows)
    exp_avg_sq_update = grad.pow(2).sub_(old_exp_avg_sq).mul_(1 - beta2)
    exp_avg_sq.index_add_(0, rows, exp_avg_sq_update)
    numer = exp_avg_update.add_(old_exp_avg)
    denom = exp_avg_sq_update.add_(old_exp_avg_sq).sqrt_().add_(eps)
    param.index_add_(0, rows, -step_size * numer.div_(denom))


class LazyAdam(torch.optim.SparseAdam):
    """torch.optim.SparseAdam's update, computed on the touched rows only (see the module)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr = group["eps"], float(group["lr"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("LazyAdam needs sparse row gradients (an embedding with sparse=True)")
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"]
                step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                if _fused(param, param.grad, state, group):
                    _step_fused(param, state, beta1, beta2, eps, step_size)
                else:
                    _step_blocks(param, state, beta1, beta2, eps, step_size, group.get("maximize", False))
        return loss
