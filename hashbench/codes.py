"""Codes from real values, written once: bit 1 ↔ +1, with sgn(0) = +1, as numpy.packbits rows."""

from __future__ import annotations

from typing import Any

import numpy as np


def pack_signs(values: Any) -> np.ndarray:
    """uint8 [n, ceil(bits / 8)]: the signs of `values` [n, bits] (a numpy array or a torch tensor)."""
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.packbits(np.asarray(values) >= 0, axis=1)
