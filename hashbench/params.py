"""Method parameters as data: each parameter's default, type, range and choices.

A method module `foo.py` keeps its parameters in `foo.toml` beside it, one table per method
it registers, so that the command line can list methods, check `-p method.key=value` and
compute a configuration's hash without importing torch or the method:

    [proposed]
    description = "SRLoss + AAGE on LightGCN"
    hashing = true

    [proposed.params]
    layers = { default = 3, min = 1 }
    lr = { default = 1e-2, above = 0 }
    rank = { default = "exact", choices = ["exact", "sampled"] }
    max_minutes = { type = "float", optional = true, above = 0 }   # default: none
    epochs = 400                                                    # shorthand: default only

Types are `int`, `float`, `bool`, `str` and `int-list`, inferred from the default when not
given. `min` / `max` are inclusive bounds, `above` an exclusive lower bound. `optional =
true` allows "none" (TOML has no null, so an optional parameter without `default` defaults to
None). A method without a TOML file (a third-party plug-in) declares a plain `defaults` dict
on its class and gets the types inferred from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hashbench.errors import HashbenchError
from hashbench.specs import unknown_name_error

TYPES = ("int", "float", "bool", "str", "int-list")
_NONE_WORDS = ("none", "null")
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "1"), ("false", "no", "0")
_DESCRIBE = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "int-list": "a comma-separated list of integers"}


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple)):
        return "int-list"
    return "str"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    optional: bool = False
    min: float | None = None
    max: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None

    @classmethod
    def parse(cls, name: str, raw: Any, where: str) -> "ParamSpec":
        if not isinstance(raw, dict):
            raw = {"default": raw}
        unknown = set(raw) - {"default", "type", "optional", "min", "max", "above", "choices"}
        if unknown:
            raise HashbenchError(f"{where}: parameter {name!r} has unknown field(s) {', '.join(sorted(unknown))}")
        if "default" not in raw and not raw.get("optional"):
            raise HashbenchError(f"{where}: parameter {name!r} needs a default (or optional = true)")
        default = raw.get("default")
        kind = raw.get("type") or _infer_type(default)
        if kind not in TYPES:
            raise HashbenchError(f"{where}: parameter {name!r} has unknown type {kind!r}; valid: {', '.join(TYPES)}")
        spec = cls(name, kind, default, bool(raw.get("optional", default is None)), raw.get("min"),
                   raw.get("max"), raw.get("above"), tuple(raw["choices"]) if "choices" in raw else None)
        if default is not None:
            spec.check(default, where)
        return spec

    def _expected(self) -> str:
        text = _DESCRIBE[self.type]
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        bounds = [f"> {_num(self.above)}" if self.above is not None else None,
                  f">= {_num(self.min)}" if self.min is not None else None,
                  f"<= {_num(self.max)}" if self.max is not None else None]
        text += "".join(f" {b}" for b in bounds if b)
        return text + (" (or none)" if self.optional else "")

    def check(self, value: Any, where: str) -> Any:
        """`value` as this parameter's type (strings from the command line are parsed), or a
        one-line HashbenchError. Typed values are kept as given (an int stays an int where a
        float is expected), so a configuration hashes the same however it was written."""
        problem = f"{where}.{self.name} must be {self._expected()}, got {value!r}"
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS
                             and self.type != "str"):
            if self.optional:
                return None
            raise HashbenchError(problem)
        value = self._coerce(value, problem)
        items = value if self.type == "int-list" else [value]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if not math.isfinite(item) or (self.min is not None and item < self.min) or \
                        (self.max is not None and item > self.max) or (self.above is not None and item <= self.above):
                    raise HashbenchError(problem)
        if self.choices is not None and value not in self.choices:
            raise HashbenchError(problem)
        return value

    def _coerce(self, value: Any, problem: str) -> Any:
        text = value.strip() if isinstance(value, str) else None
        try:
            if self.type == "str":
                if text is None:
                    raise ValueError
                return value
            if self.type == "bool":
                if isinstance(value, bool):
                    return value
                if text is not None and text.lower() in _TRUE_WORDS + _FALSE_WORDS:
                    return text.lower() in _TRUE_WORDS
                raise ValueError
            if self.type == "int":
                if isinstance(value, bool) or not (isinstance(value, int) or text is not None):
                    raise ValueError
                return int(text) if text is not None else value
            if self.type == "float":
                if isinstance(value, bool) or not (isinstance(value, (int, float)) or text is not None):
                    raise ValueError
                return float(text) if text is not None else value
            # int-list: "10,5", "[10, 5]" or a list/tuple of ints
            if text is not None:
                parts = [p for p in text.strip("[]() ").replace(" ", "").split(",") if p]
                return [int(p) for p in parts] if parts else _raise()
            if isinstance(value, (list, tuple)) and value and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                return list(value)
            raise ValueError
        except ValueError:
            raise HashbenchError(problem) from None


def _raise():
    raise ValueError


def _num(x: float) -> str:
    return f"{x:g}"


def _list_length(table: dict[str, Any], where: str) -> int | None:
    value = table.get("released_code_ndcg_list")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise HashbenchError(f"{where}: released_code_ndcg_list must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class MethodSpec:
    """What the command line and the report know of a method without importing it."""

    name: str
    description: str = ""
    hashing: bool = True
    params: dict[str, ParamSpec] = field(default_factory=dict)
    # the tuning search space (issue: faithful baselines), kept as declared
    search: dict[str, Any] = field(default_factory=dict)
    # a variant row of another method (`based_on` in its TOML): the same model, trained alike
    based_on: str | None = None
    # the method's released code removes the user's training items from its ranking (methods.md
    # E2): "all the papers' habits" (protocol_effects) then keeps them masked for this row
    released_code_masks_training: bool = False
    # the length of the list whose hits the released code's NDCG counts in its IDCG (methods.md
    # E1: BGCH's top 1000, HashGNN's top 100); None: not declared, so the hits-IDCG habit counts
    # the top K's hits (the most any list gives); a code with the standard NDCG says so below
    released_code_ndcg_list: int | None = None
    # the released code's NDCG is the standard one (IDCG over min(K, |test|): LightGCN-PyTorch's
    # NDCGatK_r), so "all the habits" keeps the standard NDCG for this row
    released_code_standard_ndcg: bool = False

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: p.default for k, p in self.params.items()}

    def with_defaults(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The parameters a run of `overrides` trains with: every default, then the overrides."""
        return {**self.defaults, **overrides}

    @classmethod
    def from_table(cls, name: str, table: dict[str, Any], where: str) -> "MethodSpec":
        unknown = set(table) - {"description", "hashing", "params", "search", "based_on", "released_code_masks_training",
                                "released_code_ndcg_list", "released_code_standard_ndcg"}
        if unknown:
            raise HashbenchError(f"{where}: [{name}] has unknown key(s) {', '.join(sorted(unknown))}")
        params = {k: ParamSpec.parse(k, v, f"{where} [{name}]") for k, v in table.get("params", {}).items()}
        return cls(name, table.get("description", ""), bool(table.get("hashing", True)), params,
                   dict(table.get("search", {})), table.get("based_on"),
                   bool(table.get("released_code_masks_training", False)), _list_length(table, f"{where} [{name}]"),
                   bool(table.get("released_code_standard_ndcg", False)))

    @classmethod
    def from_defaults(cls, name: str, description: str, hashing: bool, defaults: dict[str, Any]) -> "MethodSpec":
        """For a method class without a TOML file: types inferred from its `defaults`."""
        return cls(name, description, hashing,
                   {k: ParamSpec(k, _infer_type(v), v, optional=v is None) for k, v in defaults.items()})

    def check_params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The overrides, each checked (and parsed from a string) against its declaration."""
        out = {}
        for key, value in overrides.items():
            if key not in self.params:
                raise unknown_name_error(f"{self.name} parameter", key, list(self.params))
            out[key] = self.params[key].check(value, self.name)
        return out
