"""What the method test modules share: fit a registered method on a split, the way the runner does."""

from hashbench import seeds
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.runner import evaluate_method


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
