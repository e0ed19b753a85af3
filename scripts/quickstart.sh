#!/usr/bin/env bash
# hashbench quick start: install into .venv, then fetch → run → report.
# Uses real Gowalla when it can be fetched (the cache, HASHBENCH_MIRROR or the upstream URLs);
# otherwise the built-in synthetic dataset, so the main job always runs end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/hashbench ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  bash scripts/install-torch.sh .venv/bin/python     # CPU wheel without an NVIDIA GPU, CUDA with one
  .venv/bin/python -m pip install -q -e ".[test]"
fi
hb=.venv/bin/hashbench
results=${HASHBENCH_QUICKSTART_RESULTS:-quickstart-results}
# fetch's own error stays visible: "offline" and "HASHBENCH_MIRROR points nowhere" need different fixes
if $hb fetch gowalla --quiet; then
  dataset=gowalla methods=mostpop,lsh,proposed
else
  echo "Gowalla could not be fetched (the error above); using the built-in synthetic dataset instead."
  dataset=synthetic methods=all report_datasets="--datasets synthetic"
fi
$hb run --methods "$methods" --datasets "$dataset" --bits 64 --results "$results"
$hb report --results "$results" ${report_datasets:-}
echo
echo "Done. hashbench is installed in .venv: run '. .venv/bin/activate' to use the 'hashbench' command"
echo "(or call .venv/bin/hashbench), e.g. 'hashbench --help'."
