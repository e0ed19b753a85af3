import sys
import textwrap

import pytest

from hashbench import registry
from hashbench.errors import HashbenchError
from hashbench.registry import check_bits, get_method
from hashbench.specs import parse_registry


def test_unknown_method_lists_valid_names_and_nearest_match():
    with pytest.raises(HashbenchError) as info:
        get_method("mostpopp")
    assert "did you mean 'mostpop'" in str(info.value) and "lsh" in str(info.value)


@pytest.mark.parametrize("bits", [0, -8, 12, 63])
def test_bits_must_be_positive_multiple_of_8(bits):
    with pytest.raises(HashbenchError, match="multiple of 8"):
        check_bits(bits)


def test_third_party_method_arrives_through_entry_point(tmp_path, monkeypatch):
    """A package exposing `hashbench.methods` entry points shows up in the registry."""
    pkg = tmp_path / "plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import numpy as np
        from hashbench.registry import Method

        class Plugin(Method):
            name = "plugin"
            def fit(self, data):
                pass
    """))
    dist = tmp_path / "plugin_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hashbench.methods]\nplugin = plugin_pkg:Plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert get_method("plugin").__name__ == "Plugin"
    sys.modules.pop("plugin_pkg", None)


def test_unknown_parameter_is_a_clear_error():
    cls = get_method("lsh")
    with pytest.raises(HashbenchError, match="unknown lsh parameter 'svd_dimm'; did you mean 'svd_dim'"):
        cls(64, registry.FitContext(seed=None), svd_dimm=3)


@pytest.mark.parametrize("toml, message", [
    ("[a\n", "not valid TOML"),
    ("[d]\ntitle='x'\ncitation='c'\nusers=1\nitems=1\n", "no sources"),
    ("[d]\ntitle='x'\ncitation='c'\nusers=1\nitems=1\n[[d.sources]]\nname='s'\nformat='csv'\n"
     "files=[{name='f', role='all', sha256='00'}]\n", "format must be"),
    ("[d]\ntitle='x'\ncitation='c'\nusers=1\nitems=1\n[[d.sources]]\nname='s'\nformat='tsv'\n"
     "files=[{name='f', role='all'}]\n", "no sha256 or git_blob"),
    ("[d]\ntitle='x'\n", "missing or has a bad field"),
])
def test_bad_dataset_registry_gets_a_clear_error(toml, message):
    with pytest.raises(HashbenchError, match=message):
        parse_registry(toml)


def test_every_released_code_list_a_method_declares_is_one_the_evidence_records():
    """A method's `released_code_ndcg_list` (its code's IDCG counts the hits of that list) is read
    by Tables 7-8 from the protocol evidence, which records RELEASED_CODE_LISTS only: another
    length would show '–' for ever under a caption naming it."""
    from hashbench.evaluate import RELEASED_CODE_LISTS
    from hashbench.registry import method_names, method_spec

    declared = {name: method_spec(name).released_code_ndcg_list for name in method_names()}
    assert declared["hashgnn"] == 100 and declared["bgch"] == 1000
    assert all(n is None or n in RELEASED_CODE_LISTS for n in declared.values()), declared
