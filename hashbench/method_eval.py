"""A trained method evaluated on a split: by its own ranking, by a ranking variant's, and
as the papers' evaluation habits would have seen it (the protocol evidence).

A ranking variant (registered `based_on` another method: bgch-scaled, hashgnn-rerank) is the
same model ranked another way: it is trained and selected as its base (training_class), and a
base's trained instance is ranked as the variant by ranked_as.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from hashbench.errors import HashbenchError
from hashbench.evaluate import RELEASED_CODE_LISTS, EvalResult, evaluate_scores, evaluate_split_codes, held_out
from hashbench.registry import Method, get_method, method_spec
from hashbench.splits import Split


def evaluate_method_full(method: Method, split: Split, on: str, ks, lists=()) -> EvalResult:
    if method.hashing:
        user_codes, item_codes = method.codes()
        return evaluate_split_codes(user_codes, item_codes, split, on, ks, lists=lists)
    from hashbench.retrieval import Exclusions

    relevant, exclude = held_out(split, on)
    score_fn = method.scores_excluding(Exclusions.from_pairs(exclude, split.n_users, split.n_items))
    return evaluate_scores(score_fn, split.n_users, split.n_items, relevant, exclude, ks, lists=lists)


def evaluate_method(method: Method, split: Split, on: str, ks, lists=()) -> dict[str, float]:
    return evaluate_method_full(method, split, on, ks, lists).metrics


def protocol_evidence(split: Split, rankings: tuple[type, ...] = ()) -> Callable[[Method], dict[str, Any]]:
    """What the papers' evaluation habits would have seen of a model (issue: protocol effects):
    test Recall/NDCG@50 under our protocol and with training and validation items left in the
    ranking, with N*@50 over the hits of the top 50 and of the released codes' longer lists
    (RELEASED_CODE_LISTS). Recorded in a record's `protocol_evidence`, apart from everything that selects or
    reports a model: the report's protocol-effect table is its only reader.

    `rankings`: the classes whose rankings of the trained model the cell records, its own first
    (a ranking variant's, such as bgch-scaled's α-scaled scores, when it is trained as its base);
    the others' evidence goes under "rankings", by name."""

    def of(method: Method) -> dict[str, dict[str, float]]:
        return {"test": evaluate_method(method, split, "test", (50,), RELEASED_CODE_LISTS),
                "test_unmasked": evaluate_method(method, split, "test-unmasked", (50,), RELEASED_CODE_LISTS)}

    def evidence(method: Method) -> dict[str, Any]:
        if not rankings:
            return of(method)
        out: dict[str, Any] = of(ranked_as(method, rankings[0]))
        if len(rankings) > 1:
            out["rankings"] = {cls.name: _evidence_or_error(of, ranked_as(method, cls)) for cls in rankings[1:]}
        return out

    return evidence


def _evidence_or_error(of: Callable[[Method], dict], view: Method) -> dict[str, Any]:
    """A companion ranking's evidence; if that ranking raises, the error (its cell is then
    recorded failed at its own evaluation) instead of failing the training it rides on."""
    try:
        return of(view)
    except HashbenchError:
        raise
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def training_class(cls: type) -> type:
    """The class that trains `cls`'s model: a ranking variant (registered `based_on` its base,
    overriding only how it scores) is trained, and selected on validation, as its base is."""
    base = method_spec(cls.name).based_on
    return get_method(base) if base else cls


def ranked_as(method: Method, cls: type) -> Method:
    """`method`'s trained model, ranked as `cls` ranks: the same object for its own class, else
    a shallow copy of a base method's instance re-classed as its ranking variant (which adds
    no state of its own: the model, its parameters and its training result are shared)."""
    if type(method) is cls:
        return method
    if not issubclass(cls, type(method)):
        raise TypeError(f"{cls.name} is not a ranking of {type(method).name}'s model")
    view = copy.copy(method)
    view.__class__ = cls
    return view
