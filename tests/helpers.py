"""What the test modules share: fit a registered method on a split, the way the runner does;
run git in a test's folder; compile the LaTeX report in a two-column paper."""

import subprocess
from pathlib import Path

import numpy as np

from hashbench import seeds
from hashbench.evaluate import evaluate_split_codes
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.method_eval import evaluate_method


def fit_method(name, split, bits=64, checkpoint_dir=None, progress=None, **params):
    """Fit method `name` with early stopping on the split's validation Recall@50."""
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"), checkpoint_dir=checkpoint_dir,
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    if progress is not None:
        ctx.progress = progress
    method = get_method(name)(bits, ctx, **params)
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return method


def popularity_recall(split) -> float:
    """MostPop's test Recall@50: the floor a learning method must clear."""
    return evaluate_method(fit_method("mostpop", split), split, "test", (50,))["recall@50"]


def assert_learns_reproducibly(fitted, split, refit, margin=0.1):
    """64-bit codes of the right shape, test Recall@50 above popularity by `margin`, and a
    refit with the same seed (refit()) gives identical codes."""
    user_codes, item_codes = fitted.codes()
    assert user_codes.shape == (split.n_users, 8) and user_codes.dtype == np.uint8
    assert item_codes.shape == (split.n_items, 8)
    recall = evaluate_split_codes(user_codes, item_codes, split, "test", (50,)).metrics["recall@50"]
    assert recall > popularity_recall(split) + margin
    again = refit().codes()
    assert np.array_equal(again[0], user_codes) and np.array_equal(again[1], item_codes)


class CountingTrainer:
    """A trainer protocol stand-in that learns nothing and remembers the epochs it trained:
    for tests of the driver itself (stopping rules), where the validation is scripted."""

    def __init__(self):
        self.epochs: list[int] = []

    @property
    def epoch(self) -> int:
        return self.epochs[-1] if self.epochs else 0

    def initialise(self):
        pass

    def train_epoch(self, epoch, rng):
        self.epochs.append(epoch)
        return {"loss": 1.0}

    def state(self):
        return {}

    def load_state(self, state):
        pass

    def snapshot(self):
        return {}

    def restore(self, snapshot):
        pass

    def session(self):
        import contextlib

        return contextlib.nullcontext()

    evaluating = session


def git(folder, *args):
    """git in `folder` with a throwaway identity (tests that need a history: prune, verify --history)."""
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
                    *args],
                   check=True, capture_output=True)


def commit_everything(folder, message="results"):
    """A new repository in `folder` with everything in it committed."""
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", message)


# the minimal paper the report's tables must fit: two columns, booktabs, nothing else
PAPER = "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{tables}\n" \
        "\\end{document}\n"


def compile_tables(tex: str, where: Path) -> str:
    """pdflatex's log of PAPER with `tex` as its tables (two passes, so that every \\ref resolves)."""
    (where / "tables.tex").write_text(tex)
    (where / "paper.tex").write_text(PAPER)
    for _ in range(2):  # the second pass resolves \ref
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=where,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-3000:]
    return (where / "paper.log").read_text(errors="replace")


def assert_compiles_cleanly(tex: str, where: Path) -> None:
    log = compile_tables(tex, where)
    assert "Overfull \\hbox" not in log
    assert "Float too large" not in log  # a float taller than the page runs off its foot, cut
    assert "undefined" not in log.lower()  # every \\ref found its \\label
