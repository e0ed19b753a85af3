"""Re-check recorded metrics from the exported codes (`hashbench verify`).

A hashing record names its codes file (codes/*.npz: the users' and items' packed codes and the
split they were evaluated on). From those codes and the split alone, rebuilt from the dataset
and the record's protocol and seed, the evaluator gives every metric again: each recorded test
(and, for a plain run, validation) metric must come back, and so must the per-user values
(per_user/*.npz) that the significance tests read. Nothing here trusts the training code or the
method: a reader who doubts a number needs only the codes, the data and the evaluator.

Records without codes are not re-checkable this way: the float rows (LightGCN, MostPop) and
the ranking variants that score with real values (bgch-scaled, hashgnn-rerank). A record whose
files were pruned (a superseded run, a tuning trial that is not its study's leader) keeps its
metrics, and git history keeps its files: with `history`, they are read back from the last
commit that had them (into a temporary folder; the work tree is not touched) and checked too.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from hashbench import records
from hashbench.errors import HashbenchError
from hashbench.evaluate import evaluate_split_codes
from hashbench.splits import Split

# The evaluator is deterministic, so a faithful record comes back bit for bit; the tolerance
# only forgives a platform's last-digit rounding of the same sums.
REL_TOL = 1e-9


@dataclass
class Check:
    record: dict
    outcome: str  # "match", "mismatch", "pruned" (codes file gone), "no codes" (a float row)
    problems: list[str] = field(default_factory=list)
    restored: bool = False  # its files were read back from git history

    @property
    def label(self) -> str:
        r = self.record
        trial = r.get("tuning") or {}
        what = f" (trial {trial['trial']} of {trial['study']})" if trial else ""
        return f"{r['method']} · {r['dataset']} · {r['bits']}b · seed {r['seed']} · {r['config_hash'][:8]}{what}"


def _close(recorded: float, recomputed: float) -> bool:
    return math.isclose(recorded, recomputed, rel_tol=REL_TOL, abs_tol=1e-12)


def _is_refit(rec: dict) -> bool:
    return bool(rec.get("refit")) or "refit" in (rec.get("extras") or {})


def check_record(rec: dict, split: Split, codes: Path, per_user: Path | None = None) -> Check:
    """Re-evaluate one record's codes (the file `codes`) on `split` (its dataset, protocol and
    seed's split), and its per-user values (`per_user`, when there is one to read)."""
    problems: list[str] = []
    with np.load(codes, allow_pickle=False) as z:
        user_codes, item_codes = z["user_codes"], z["item_codes"]
        bits, codes_split = int(z["bits"]), str(z["split_hash"])
    if codes_split != split.hash or rec.get("split_hash") != split.hash:
        return Check(rec, "mismatch", [f"split: the codes say {codes_split[:12]}, the record "
                                       f"{str(rec.get('split_hash'))[:12]}, the data gives {split.hash[:12]}"])
    if bits != rec["bits"]:
        problems.append(f"bits: the codes file says {bits}, the record {rec['bits']}")
    # a refit's validation metrics are its selection run's (another model): only test is its own
    for on in ("test",) if _is_refit(rec) else ("test", "valid"):
        result = evaluate_split_codes(user_codes, item_codes, split, on, rec["ks"], bits=bits)
        for key, value in rec["metrics"][on].items():
            again = result.metrics.get(key)
            if again is None or not _close(value, again):
                problems.append(f"{on} {key}: recorded {value:.6g}, the codes give "
                                f"{'nothing' if again is None else f'{again:.6g}'}")
        if on == "test" and per_user is not None:
            problems += _per_user_problems(per_user, result, split.n_users)
    return Check(rec, "mismatch" if problems else "match", problems)


def _per_user_problems(path: Path, result, n_users: int) -> list[str]:
    """The stored per-user test values (float32, NaN for users without test items) against the
    re-evaluated ones."""
    problems = []
    with np.load(path, allow_pickle=False) as z:
        for name in z.files:
            if name == "split_hash":
                continue
            key = name.replace("_at_", "@")
            if key not in result.per_user:
                problems.append(f"per-user {key}: not a metric the evaluator gives")
                continue
            expected = np.full(n_users, np.nan, dtype=np.float32)
            expected[result.users] = result.per_user[key]
            stored = z[name]
            if stored.shape != expected.shape or not np.array_equal(stored, expected, equal_nan=True):
                differ = int((~np.isclose(stored, expected, equal_nan=True)).sum()) if stored.shape == expected.shape \
                    else "all"
                problems.append(f"per-user {key}: {differ} users differ from the re-evaluation")
    return problems


def restore_from_history(results_dir: Path, name: str, into: Path) -> bool:
    """Write the results-relative file `name` under `into` as the last commit that had it holds
    it; False when the history lacks it, this is no git work tree, or `name` (from a record,
    which anyone may have edited) would land outside `into`. Only a blob is read (cat-file), so
    nothing in the history can run."""
    try:
        name = records.record_file(name, "a record")
    except HashbenchError:
        return False

    def git(*args: str) -> bytes | None:
        try:  # the name is a literal path, never a pattern, and renames are not followed (log.follow)
            out = subprocess.run(["git", "--literal-pathspecs", "-C", str(results_dir), *args], capture_output=True,
                                 timeout=120)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("log", "-n", "1", "--no-follow", "--format=%H", "--diff-filter=AM", "--", name) or b"").decode()
    content = git("cat-file", "blob", f"{commit.strip()}:./{name}") if commit.strip() else None
    if content is None:
        return False
    target = into / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return True


def verify(results_dir: Path, load_split: Callable[[str, str, int], Split],
           keep: Callable[[dict], bool] = lambda rec: True,
           on_check: Callable[[Check], None] = lambda check: None, history: bool = False) -> list[Check]:
    """Check every current record (the latest of each cell) that passes `keep`; the splits are
    built once per (dataset, protocol, seed) by `load_split`. `history`: a pruned record's files
    are read back from git history, one record at a time, and checked too (still "pruned" when
    the history lacks its codes)."""
    checks = []
    todo: list[dict] = []
    for rec in records.latest_by_cell(results_dir).values():
        if rec.get("status") != "ok" or not keep(rec):
            continue
        if not rec.get("codes_file"):
            checks.append(Check(rec, "no codes"))
            continue
        try:  # a record is data: its file names must stay inside the results directory
            for key in ("codes_file", "per_user_file"):
                if rec.get(key):
                    records.record_file(rec[key], key)
        except HashbenchError as exc:
            checks.append(Check(rec, "mismatch", [str(exc)]))
            on_check(checks[-1])
            continue
        if history or (Path(results_dir) / rec["codes_file"]).is_file():
            todo.append(rec)
        else:
            checks.append(Check(rec, "pruned"))
    todo.sort(key=lambda r: (r["dataset"], r["protocol"], r["seed"]))  # one split alive at a time
    current: tuple | None = None
    split = None
    for rec in todo:
        with tempfile.TemporaryDirectory(prefix="hashbench-verify-") as restored:
            # each of the record's files from disk, else (with history) from git, on its own
            found: dict[str, Path] = {}
            from_history = False
            for file_key in ("codes_file", "per_user_file"):
                if rec.get(file_key) and (Path(results_dir) / rec[file_key]).is_file():
                    found[file_key] = Path(results_dir) / rec[file_key]
                elif rec.get(file_key) and history and restore_from_history(results_dir, rec[file_key], Path(restored)):
                    found[file_key] = Path(restored) / rec[file_key]
                    from_history = from_history or file_key == "codes_file"
            if "codes_file" not in found:
                checks.append(Check(rec, "pruned"))
                continue
            split_key = (rec["dataset"], rec["protocol"], rec["seed"])
            if split_key != current:
                current, split = split_key, load_split(*split_key)
            check = check_record(rec, split, found["codes_file"], found.get("per_user_file"))
        check.restored = from_history
        on_check(check)
        checks.append(check)
    return checks


def summary(checks: Iterable[Check]) -> dict[str, int]:
    counts = {"match": 0, "mismatch": 0, "pruned": 0, "no codes": 0}
    for check in checks:
        counts[check.outcome] += 1
    return counts
