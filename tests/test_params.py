"""Method parameters as data: the command line checks a value against its declaration, and
listing methods or reading their specs imports neither torch nor a method module."""

import subprocess
import sys

import pytest

from hashbench.errors import HashbenchError
from hashbench.params import MethodSpec
from hashbench.registry import available_methods, method_names

SPEC = MethodSpec.from_table("m", {"params": {
    "epochs": {"default": 10, "min": 1},
    "lr": {"default": 1e-2, "above": 0.0},
    "rank": {"default": "exact", "choices": ["exact", "sampled"]},
    "flag": False,
    "cap": {"type": "float", "optional": True, "above": 0.0},
    "fanout": {"default": [10, 5], "min": 1},
}}, "test.toml")


@pytest.mark.parametrize("key, text, value", [
    ("epochs", "7", 7), ("lr", "0.5", 0.5), ("lr", "1", 1.0), ("rank", "sampled", "sampled"),
    ("flag", "true", True), ("flag", "no", False), ("cap", "none", None), ("cap", "2.5", 2.5),
    ("fanout", "4,2", [4, 2]), ("fanout", "[3, 3]", [3, 3]),
])
def test_command_line_strings_become_the_declared_type(key, text, value):
    assert SPEC.check_params({key: text}) == {key: value}


@pytest.mark.parametrize("key, text, message", [
    ("epochs", "abc", "m.epochs must be an integer >= 1, got 'abc'"),
    ("epochs", "-5", "m.epochs must be an integer >= 1"),
    ("epochs", "2.5", "m.epochs must be an integer"),
    ("lr", "0", "m.lr must be a number > 0"),
    ("lr", "nan", "m.lr must be a number > 0"),
    ("rank", "fast", "m.rank must be one of exact, sampled"),
    ("flag", "maybe", "m.flag must be true or false"),
    ("epochs", "none", "m.epochs must be an integer"),
    ("fanout", "4,0", "m.fanout must be a comma-separated list of integers >= 1"),
    ("lrr", "1", "unknown m parameter 'lrr'; did you mean 'lr'"),
])
def test_bad_values_are_one_line_errors(key, text, message):
    with pytest.raises(HashbenchError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        SPEC.check_params({key: text})
    assert "\n" not in str(info.value)


def test_typed_values_keep_their_type_so_config_hashes_do_not_move():
    # an int where a float is declared stays an int: campaign.toml's `beta = 5` must hash as before
    assert SPEC.check_params({"lr": 1}) == {"lr": 1}
    with pytest.raises(HashbenchError):
        SPEC.check_params({"epochs": True})  # a bool is not an integer


def test_a_declaration_whose_default_breaks_its_own_range_is_refused():
    with pytest.raises(HashbenchError, match=r"x.toml \[m\].epochs must be an integer >= 1, got 0"):
        MethodSpec.from_table("m", {"params": {"epochs": {"default": 0, "min": 1}}}, "x.toml")
    with pytest.raises(HashbenchError, match="unknown field"):
        MethodSpec.from_table("m", {"params": {"epochs": {"default": 1, "mni": 1}}}, "x.toml")


def test_every_method_class_carries_its_declared_spec():
    from hashbench.registry import built_in_specs  # the TOML files read again, apart from register()

    declared = built_in_specs()
    for name, cls in available_methods().items():
        _, spec = declared[name]
        assert cls.defaults == spec.defaults and cls.hashing == spec.hashing and cls.description == spec.description


def test_listing_and_specs_import_neither_torch_nor_a_method():
    code = ("import sys; from hashbench.registry import method_names, method_spec; "
            "names = method_names(); [method_spec(n).defaults for n in names]; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('baselines.', 'hashbench.methods.'))]; "
            "print(len(names), bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{len(method_names())} []"
