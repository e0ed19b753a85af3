"""Optimisers the methods' reference code uses and torch does not offer at speed.

`LazyAdam` is TensorFlow's LazyAdam (CIGAR/HashRec's optimiser), which torch implements as
`torch.optim.SparseAdam`: only the rows a batch gathered get their moments and values
updated, with the bias correction of the global step. SparseAdam does that through sparse
tensor algebra (coalesce, sparse_mask, sparse + dense adds), which on CPU cost ~73 ms of a
~130 ms HashRec step on Gowalla. The same arithmetic, operation for operation, on the
touched rows gathered into dense blocks costs a fraction of that and gives bitwise the same
parameters (tests/test_optim.py); its state is SparseAdam's, so checkpoints written with one
load into the other.
"""

from __future__ import annotations

import math

import torch


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


class LazyAdam(torch.optim.SparseAdam):
    """torch.optim.SparseAdam's update, on dense blocks of the touched rows (see the module)."""

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
                rows, grad = summed_rows(param.grad)
                if group.get("maximize", False):
                    grad = -grad
                if grad.numel() == 0:
                    continue
                exp_avg, exp_avg_sq, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
                # SparseAdam's order of operations: old += (1 − b)(new − old), then numer/denom
                # from the update and the old values (so the parameters come out bitwise equal)
                old_exp_avg = exp_avg.index_select(0, rows)
                exp_avg_update = grad.sub(old_exp_avg).mul_(1 - beta1)
                exp_avg.index_add_(0, rows, exp_avg_update)
                old_exp_avg_sq = exp_avg_sq.index_select(0, rows)
                exp_avg_sq_update = grad.pow(2).sub_(old_exp_avg_sq).mul_(1 - beta2)
                exp_avg_sq.index_add_(0, rows, exp_avg_sq_update)
                numer = exp_avg_update.add_(old_exp_avg)
                denom = exp_avg_sq_update.add_(old_exp_avg_sq).sqrt_().add_(eps)
                step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                param.index_add_(0, rows, -step_size * numer.div_(denom))
        return loss
