"""Grouping pairs by row (CSR), written once: every sampler, adjacency and mask builds on it."""

from __future__ import annotations

import numpy as np


def csr_indptr(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """int64 [n_rows + 1]: row r's entries are [indptr[r], indptr[r + 1]) once sorted by row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr


def group_by_row(rows: np.ndarray, cols: np.ndarray, n_rows: int, *values: np.ndarray,
                 sort_cols: bool = True) -> tuple[np.ndarray, ...]:
    """(indptr, cols, *values) of the pairs grouped by row.

    Within a row, columns are ascending (`sort_cols`) or keep their input order (a stable sort
    by row only)."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    order = np.lexsort((cols, rows)) if sort_cols else np.argsort(rows, kind="stable")
    return (csr_indptr(rows, n_rows), np.ascontiguousarray(cols[order]),
            *(np.ascontiguousarray(np.asarray(v)[order]) for v in values))
