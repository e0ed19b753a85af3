"""Training checkpoints: one file per cell, written atomically, read back only by the same
configuration (its fingerprint).

`save_checkpoint(path, state)` and `load_checkpoint(path, fingerprint)` are the only two ways
the training driver touches a checkpoint file, so how a state is serialised lives here alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (which carries its "fingerprint") to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state saved at `path` by the configuration `fingerprint`, or None (start afresh)."""
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None  # a different configuration ran here before: start afresh (and overwrite)
    return state
