"""hashbench: a benchmark suite for hashing-based recommendation."""

import os

# numba's default OpenMP layer shares torch's libgomp: after the first parallel evaluation an
# OpenMP worker spun at 100% and slowed torch training ~6x (HashRec Gowalla epoch 25 s -> 150 s).
# The workqueue layer has no such interaction. Set before numba is first imported.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
# OpenMP threads spin-wait by default; when the cores are shared (a sweep beside other jobs)
# that spinning made a synthetic fit 5.5x slower (89 s -> 16 s with PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
