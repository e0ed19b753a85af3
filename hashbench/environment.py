"""Where a cell ran: the software and hardware a record names, its peak memory, the device.

Every record carries these (git commit, packages, CPU/GPU, threads) so that a number can be
traced to the code and machine that made it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import hashbench
from hashbench.errors import HashbenchError


def environment() -> dict[str, Any]:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
        sha = rev.stdout.strip() if rev.returncode == 0 and len(rev.stdout.strip()) == 40 else None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "hashbench": hashbench.__version__, "git_sha": sha, "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": {n: pkg(n) for n in ("torch", "numpy", "scipy", "numba", "pandas")},
        "hardware": {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                     "platform": platform.platform()},
    }


def reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM, so each cell reports its own peak
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HashbenchError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device
