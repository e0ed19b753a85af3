"""GraphSAGE's mean-aggregator input over sampled neighbourhoods: [h_own; mean h_neighbours].

    x = sage_input(own_table, own_index, neighbour_table, neighbours)     # [rows, 2h]
    x[r] = [own_table[own_index[r]]; Σ_k neighbour_table[neighbours[r, k]] / fanout]

A −1 in `neighbours` is a missing neighbour (a zero vector); a −1 in `own_index` picks the last
row, as `own_table[-1]` does. The plain torch expression (the one every device runs but CPU
float32) is a row gather (core.autograd.GatherRows), the sparse "mean over the sampled ids"
operator S times the neighbour table (`SampledMean`, S built by `mean_operator`) and a cat.

On CPU float32 (`_SageInput`) the forward is the same torch products (S x by torch's CSR
product, the gather by index_select, the cat), with S built alone (Sᵀ was built every step for
the backward); the backward is one compiled pass over the batch rows that takes the gradient
to both tables: no Sᵀ, no contiguous copy of the gradient's halves, no element-wise
accumulate-put. The same gradients (tests/test_sage.py): a table row's gradient is
0 + g₁ + g₂ + … (own half) and 0 + w₁g₁ + w₂g₂ + … (neighbour half, w = S's entry) over output
rows in ascending order, every product and sum rounded (no fused multiply-add), as the
accumulate-put computes them and, on an AMD EPYC, torch's product with the counting-transposed
Sᵀ did to the bit (on an Intel Xeon MKL's product fuses multiply-add: the last bits differ).
(A compiled forward too, the gather and the mean in one pass, gave the same values but was
slower than torch's CSR product: 35–65 against 15–46 ms for a batch's 45,056 item rows.)
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from numba import njit

from hashbench.core.autograd import GatherRows


# --- the plain torch expression: the reference, and every device but CPU float32 ------------

class SampledMean(torch.autograd.Function):
    """y = S x with S [rows, nodes] the sparse "mean over sampled neighbours" operator; the
    backward uses a precomputed Sᵀ (no sparse transpose inside autograd)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, s_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.s_t = s_t
        return s @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.s_t @ grad.contiguous()


@njit(cache=True, nogil=True)
def _sorted_row(neighbours, r, row):
    """The valid (≥ 0) neighbours of row r, ascending, in `row`; returns how many."""
    m = 0
    for k in range(neighbours.shape[1]):  # insertion sort: a row has `fanout` (≤ ~10) entries
        c = neighbours[r, k]
        if c < 0:
            continue
        q = m
        while q > 0 and row[q - 1] > c:
            row[q] = row[q - 1]
            q -= 1
        row[q] = c
        m += 1
    return m


@njit(cache=True, nogil=True)
def _merged_rows(neighbours, value, indptr, cols, weights):
    """S's CSR into indptr/cols/weights: each row's sorted distinct neighbours, a repeated one's
    weight `value` summed once per repeat in order (scipy's sum_duplicates); returns nnz."""
    row = np.empty(neighbours.shape[1], np.int64)
    nnz = 0
    for r in range(neighbours.shape[0]):
        m = _sorted_row(neighbours, r, row)
        q = 0
        while q < m:
            c, weight = row[q], value
            q += 1
            while q < m and row[q] == c:
                weight += value
                q += 1
            cols[nnz], weights[nnz] = c, weight
            nnz += 1
        indptr[r + 1] = nnz
    return nnz


@njit(cache=True, nogil=True)
def _mean_csr(neighbours, n_nodes, value):
    """CSR of S (`_merged_rows`) and of Sᵀ (a counting transpose: rows ascending in each column)."""
    rows, fanout = neighbours.shape
    indptr = np.zeros(rows + 1, np.int64)
    indices = np.empty(rows * fanout, np.int64)
    data = np.empty(rows * fanout, np.float32)
    nnz = _merged_rows(neighbours, value, indptr, indices, data)
    t_indptr = np.zeros(n_nodes + 1, np.int64)
    for e in range(nnz):
        t_indptr[indices[e] + 1] += 1
    for c in range(n_nodes):
        t_indptr[c + 1] += t_indptr[c]
    fill = t_indptr[:-1].copy()
    t_indices = np.empty(nnz, np.int64)
    t_data = np.empty(nnz, np.float32)
    for r in range(rows):
        for e in range(indptr[r], indptr[r + 1]):
            at = fill[indices[e]]
            t_indices[at], t_data[at] = r, data[e]
            fill[indices[e]] += 1
    return indptr, indices[:nnz], data[:nnz], t_indptr, t_indices, t_data


def mean_operator(neighbours: np.ndarray, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, Sᵀ) as torch CSR for neighbours [rows, fanout] (−1 = none): row r of S x is
    Σ_k x[neighbours[r, k]] / fanout (a missing neighbour counts as a zero vector). Built by a
    compiled pass (the same matrices scipy's COO → CSR gives, ~10× faster)."""
    rows, fanout = neighbours.shape
    parts = _mean_csr(np.ascontiguousarray(neighbours, dtype=np.int64), n_nodes, np.float32(1.0 / fanout))
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return tuple(torch.sparse_csr_tensor(*(torch.from_numpy(a) for a in parts[3 * t:3 * t + 3]), size=size,
                                             check_invariants=False)
                     for t, size in ((0, (rows, n_nodes)), (1, (n_nodes, rows))))


def sage_input_torch(own_table: torch.Tensor, own_index: np.ndarray, neighbour_table: torch.Tensor,
                     neighbours: np.ndarray) -> torch.Tensor:
    """[own_table[own_index]; S neighbour_table] with torch's gather, sparse product and cat."""
    dev = own_table.device
    s = [t.to(dev) for t in mean_operator(neighbours, neighbour_table.shape[0])]
    own = GatherRows.apply(own_table, torch.from_numpy(np.ascontiguousarray(own_index)).to(dev))
    return torch.cat([own, SampledMean.apply(*s, neighbour_table)], dim=-1)


# --- CPU float32: torch's product forward, one compiled pass back ------------------------------

@njit(cache=True, nogil=True)
def _sage_backward(grad, own_index, indptr, cols, weights, own_grad, neighbour_grad):
    """own_grad[own_index[r]] += grad[r, :h] and neighbour_grad[c] += S[r, c] · grad[r, h:], for
    r ascending: the accumulate-put's and the Sᵀ product's sums, term for term."""
    h = own_grad.shape[1]
    n_own = own_grad.shape[0]
    for r in range(indptr.shape[0] - 1):
        i = own_index[r]
        if i < 0:
            i += n_own
        for d in range(h):
            own_grad[i, d] += grad[r, d]
        for e in range(indptr[r], indptr[r + 1]):
            c, weight = cols[e], weights[e]
            for d in range(h):
                neighbour_grad[c, d] += weight * grad[r, h + d]


class _SageInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, own_table, neighbour_table, own_index, neighbours):
        rows, fanout = neighbours.shape
        indptr = np.zeros(rows + 1, np.int64)
        cols = np.empty(rows * fanout, np.int64)
        weights = np.empty(rows * fanout, np.float32)
        nnz = _merged_rows(neighbours, np.float32(1.0 / fanout), indptr, cols, weights)
        cols, weights = cols[:nnz], weights[:nnz]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            s = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols), torch.from_numpy(weights),
                                        size=(rows, neighbour_table.shape[0]), check_invariants=False)
        own_index = np.where(own_index < 0, own_index + own_table.shape[0], own_index)
        own = own_table.index_select(0, torch.from_numpy(own_index))
        ctx.own_index, ctx.csr = own_index, (indptr, cols, weights)
        ctx.shapes = own_table.shape, neighbour_table.shape
        return torch.cat([own, s @ neighbour_table], dim=-1)

    @staticmethod
    def backward(ctx, grad):
        own_shape, neighbour_shape = ctx.shapes
        own_grad, neighbour_grad = grad.new_zeros(own_shape), grad.new_zeros(neighbour_shape)
        _sage_backward(grad.contiguous().numpy(), ctx.own_index, *ctx.csr, own_grad.numpy(), neighbour_grad.numpy())
        return own_grad, neighbour_grad, None, None


def sage_input(own_table: torch.Tensor, own_index: np.ndarray, neighbour_table: torch.Tensor,
               neighbours: np.ndarray) -> torch.Tensor:
    """[own_table[own_index]; mean of neighbour_table over each row's sampled `neighbours`]
    ([rows, fanout] ids, −1 = none), differentiable in both tables (see the module)."""
    tensors = (own_table, neighbour_table)
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return sage_input_torch(own_table, own_index, neighbour_table, neighbours)
    return _SageInput.apply(own_table, neighbour_table, np.ascontiguousarray(own_index, dtype=np.int64),
                            np.ascontiguousarray(neighbours, dtype=np.int64))
