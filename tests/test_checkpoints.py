"""A checkpoint is data, never code: a planted pickle, a corrupt, truncated or old file is
refused with one warning line naming it, and its cell is computed from scratch to the same
codes an untouched run gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hashbench import records
from hashbench.core.checkpoints import MAGIC, load_checkpoint, read_checkpoint, save_checkpoint
from hashbench.errors import HashbenchWarning
from hashbench.cells import checkpoint_dir_for, plan_cells
from helpers import fit_method

CLI = [sys.executable, "-c", "from hashbench.cli import main; main()"]
PROPOSED = ["-p", "epochs=4", "-p", "eval_every=2"]


class Payload:
    """Unpickling this creates the file `marker`: what an attacker's code would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_pickle(path: Path, marker: Path, fingerprint: str = "") -> None:
    """A file like the torch.save checkpoints hashbench used to read, carrying the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": fingerprint, "epoch": 2, "module": Payload(marker)}, path)


def test_the_planted_pickle_is_live(tmp_path):
    """The payload does run when unpickled, so the test below shows something."""
    plant_pickle(tmp_path / "state.pt", tmp_path / "marker")
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert (tmp_path / "marker").exists()


def test_a_planted_checkpoint_never_runs_and_its_cell_completes(tmp_path):
    results, marker = tmp_path / "results", tmp_path / "pwned"
    args = ["run", "-m", "proposed", "-d", "synthetic", "--bits", "32", "--ks", "50", *PROPOSED,
            "--results", str(results)]
    cell = plan_cells(["proposed"], ["synthetic"], 32, [0], "random-8-1-1",
                      [(None, "epochs", 4), (None, "eval_every", 2)], (50,))[0]
    planted = checkpoint_dir_for(results, cell) / "train_state.pt"
    plant_pickle(planted, marker)
    done = subprocess.run(CLI + args, capture_output=True, text=True, timeout=300)
    print(done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists(), "the checkpoint's code ran"
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and str(planted) in warning[0] and "starts from scratch" in warning[0], done.stderr
    record = next(records.read_records(results))
    assert record["config_hash"] == cell.config_hash()
    assert record["status"] == "ok" and record["extras"]["resumed_from_epoch"] is None


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory) -> Path:
    """A real training checkpoint: a finished proposed run on the synthetic split."""
    from hashbench.datasets import load_dataset
    from hashbench.splits import make_split

    split = make_split(load_dataset("synthetic"), "random-8-1-1", 0)
    directory = tmp_path_factory.mktemp("ckpt")
    fit_method("proposed", split, bits=32, checkpoint_dir=directory, epochs=4, eval_every=2)
    return directory / "train_state.pt"


def damaged(blob: bytes, how: str) -> bytes:
    header_end = len(MAGIC) + 12 + int.from_bytes(blob[len(MAGIC) + 4:len(MAGIC) + 12], "little")
    if how == "truncated":
        return blob[: len(blob) * 2 // 3]
    if how == "cut in the header":
        return blob[: header_end - 10]
    if how == "a flipped bit in a tensor":
        i = (header_end + len(blob)) // 2
        return blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:]
    if how == "a tensor pointing past the end":
        header = json.loads(blob[len(MAGIC) + 12:header_end])
        header["state"]["trainer"]["torch_rng"]["offset"] = 10**12
        text = json.dumps(header).encode()
        return MAGIC + blob[len(MAGIC):len(MAGIC) + 4] + len(text).to_bytes(8, "little") + text + blob[header_end:]
    if how == "another format version":
        return MAGIC + (99).to_bytes(4, "little") + blob[len(MAGIC) + 4:]
    if how == "empty":
        return b""
    if how == "random bytes":
        return np.random.default_rng(0).bytes(4096)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "cut in the header", "a flipped bit in a tensor",
                                 "a tensor pointing past the end", "another format version", "empty",
                                 "random bytes"])
def test_a_damaged_checkpoint_is_refused_with_a_warning_naming_it(tmp_path, saved_state, how):
    fingerprint = read_checkpoint(saved_state)["fingerprint"]
    path = tmp_path / "train_state.pt"
    path.write_bytes(damaged(saved_state.read_bytes(), how))
    with pytest.warns(HashbenchWarning, match="ignoring checkpoint") as caught:
        assert load_checkpoint(path, fingerprint) is None
    assert str(path) in str(caught[0].message) and "\n" not in str(caught[0].message)


def test_an_old_pickle_checkpoint_is_refused_even_without_a_payload(tmp_path, saved_state):
    state = read_checkpoint(saved_state)
    path = tmp_path / "train_state.pt"
    torch.save(state, path)  # what hashbench wrote before: a perfectly honest pickle
    with pytest.warns(HashbenchWarning, match="not a hashbench checkpoint"):
        assert load_checkpoint(path, state["fingerprint"]) is None


def test_a_truncated_checkpoint_restarts_the_training_to_the_same_codes(tmp_path, split, saved_state):
    reference = fit_method("proposed", split, bits=32, epochs=4, eval_every=2)
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "train_state.pt").write_bytes(damaged(saved_state.read_bytes(), "truncated"))
    with pytest.warns(HashbenchWarning, match="ignoring checkpoint"):
        again = fit_method("proposed", split, bits=32, checkpoint_dir=directory, epochs=4, eval_every=2)
    assert again.result.resumed_from_epoch is None
    for a, b in zip(reference.codes(), again.codes()):
        assert np.array_equal(a, b)
    read_checkpoint(directory / "train_state.pt")  # the damaged file was replaced by a whole one


def test_a_state_comes_back_exactly(tmp_path):
    """Int keys, tuples, big ints, NaN, dtypes and a state_dict's metadata survive the round trip."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(module.parameters())
    module(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    state = {"fingerprint": "f", "module": module.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.default_rng(7).bit_generator.state,
             "half": torch.ones(2, dtype=torch.bfloat16), "mask": torch.tensor([True, False]),
             "none": None, "nan": float("nan"), "nested": (1, (2.5, "x")), "keys": {"__hb__": 1, 2: [3]}}
    save_checkpoint(tmp_path / "s.pt", state)
    back = load_checkpoint(tmp_path / "s.pt", "f")
    assert back["numpy_rng"] == state["numpy_rng"] and back["nested"] == state["nested"]
    assert back["keys"] == state["keys"] and back["none"] is None and np.isnan(back["nan"])
    assert list(back["optimizer"]["state"]) == list(state["optimizer"]["state"])  # int keys, not "0"
    assert back["module"]._metadata == state["module"]._metadata
    for key in ("torch_rng", "half", "mask"):
        assert back[key].dtype == state[key].dtype and torch.equal(back[key], state[key])
    for key, value in state["module"].items():
        assert torch.equal(back["module"][key], value)
    assert load_checkpoint(tmp_path / "s.pt", "another config") is None  # silently: not damage


def test_an_npz_holding_pickled_objects_is_refused_not_unpickled(tmp_path):
    """Codes and per-user files are read with pickles off: a planted object array is an error."""
    from hashbench.errors import HashbenchError
    from hashbench.significance import load_per_user

    marker = tmp_path / "pwned"
    (tmp_path / "per_user").mkdir()
    np.savez(tmp_path / "per_user" / "x.npz", recall_at_50=np.array([Payload(marker)], dtype=object))
    with pytest.raises(HashbenchError, match="pickled objects"):
        load_per_user(tmp_path, {"per_user_file": "per_user/x.npz"}, "recall@50")
    assert not marker.exists()
