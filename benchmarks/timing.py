"""The benchmarks' timing harness, written once: threads pinned, untimed warm-up calls, then
wall and process-CPU seconds per timed call, and the machine's load to quote beside them.

It lives beside the scripts rather than in hashbench: `train_speed.py --baseline-ref` runs
this same harness over an older commit's hashbench (PYTHONPATH = that tree), so the harness
must neither come from nor depend on the code it measures. The scripts import it as `timing`
(a script's own directory is first on sys.path).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable


def pin_threads(threads: int) -> None:
    """torch and numba use `threads` threads (numba at most its pool's size)."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (all threads of this process) of each of `repeats` calls, after
    `warmup` untimed ones. On a shared machine the CPU time is the steadier number:
    uncontended wall ~ CPU / threads for the parallel parts."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def load_note() -> str:
    """The machine's load, for the line under a benchmark's table."""
    return f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
