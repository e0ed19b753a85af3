#!/usr/bin/env bash
# Install PyTorch for what this machine has, into the Python given as $1 (default: python).
#   NVIDIA GPU (nvidia-smi lists one): the default build from the package index (CUDA wheels).
#   No NVIDIA GPU: the CPU-only wheel from PyTorch's own CPU index (~200 MB instead of several
#   GB of CUDA packages); if that index cannot be reached, the plain package index (whatever
#   it serves for this platform: the CPU build on macOS and Windows, the CUDA one on Linux).
# TORCH_VERSION pins the version the committed numbers were made with; override to change it.
set -euo pipefail
python=${1:-python}
version=${TORCH_VERSION:-2.13.0}
cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing torch==$version with CUDA from the package index"
  "$python" -m pip install -q "torch==$version"
elif "$python" - "$cpu_index/torch/" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=15)
PY
then
  echo "no NVIDIA GPU: installing the CPU build of torch==$version from $cpu_index"
  "$python" -m pip install -q --index-url "$cpu_index" "torch==$version"
else
  echo "no NVIDIA GPU, and $cpu_index cannot be reached: installing torch==$version from the plain package index"
  "$python" -m pip install -q "torch==$version"
fi
