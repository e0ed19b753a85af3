#!/usr/bin/env bash
# Run hashbench cells on a borrowed GPU machine for at most SECONDS and send their results back
# as one archive, to be merged here with `hashbench merge`.
#
#   bash scripts/device-run.sh SECONDS HASHBENCH-ARGS...
#   e.g.  bash scripts/device-run.sh 540 campaign --jobs 1
#         bash scripts/device-run.sh 540 run -m lightgcn -d gowalla --seeds 3 -p max_minutes=240
#
# It runs `python3 -m hashbench HASHBENCH-ARGS... --device $HASHBENCH_DEVICE` (default cuda)
# under `timeout`: at SECONDS the sweep gets SIGTERM and stops as after Ctrl-C (finished cells
# are saved; the cell in flight is lost with the machine). Then it packs the records it added
# to results/runs.jsonl, and the files they name, into $OUT/results.tar (one file: a machine
# lent by the hour may return only a few). Back here:  hashbench merge <that>/results.tar
#
# What the machine needs, carried beside the working tree (ignored by git here):
#   .device-data/<dataset>/...  the dataset files (a copy of the offline mirror, or a download)
#   .whl/*.whl                  Python packages its image lacks, built for its Python: for the
#                               tuning stage optuna and its needs (alembic, sqlalchemy, Mako,
#                               colorlog, tqdm, PyYAML, packaging) at the versions used here, so
#                               that a study proposes the same trials there as here (README).
# The sweep's device must not also run them here: stop the local campaign during the call.
set -uo pipefail

seconds=${1:?usage: scripts/device-run.sh SECONDS HASHBENCH-ARGS...}
shift
out=${OUT:?OUT: the folder whose files come back}
results=${HASHBENCH_RESULTS:-results}
python=${HASHBENCH_PYTHON:-python3}  # the device image's python3 holds PyTorch
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .device-data ]; then export HASHBENCH_MIRROR="$PWD/.device-data"; fi
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH" || exit 1
fi
before=$(cat "$results/runs.jsonl" 2>/dev/null | wc -l)
command -v nvidia-smi >/dev/null && nvidia-smi -L
timeout --signal=TERM --kill-after=30 "$seconds" \
    "$python" -m hashbench "$@" --results "$results" --device "${HASHBENCH_DEVICE:-cuda}" 2>&1 | tee "$out/run.log"
status=${PIPESTATUS[0]}
"$python" - "$before" "$results" "$out/results.tar" <<'EOF'
"""Pack the records appended since line `before`, and the files they name, as results/..."""
import io, json, sys, tarfile

before, results, archive = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"{results}/runs.jsonl", "rb") as fh:
    new = [line for line in fh.read().splitlines(keepends=True)[before:] if line.strip()]
with tarfile.open(archive, "w") as tar:
    data = b"".join(new)
    info = tarfile.TarInfo("results/runs.jsonl")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    for line in new:
        record = json.loads(line)
        for key in ("codes_file", "per_user_file"):
            if record.get(key) and record.get("status") == "ok":
                tar.add(f"{results}/{record[key]}", arcname=f"results/{record[key]}")
print(f"packed {len(new)} records into {archive}")
EOF
exit "$status"
