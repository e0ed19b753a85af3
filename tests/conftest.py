import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache, or picks up a mirror from the shell."""
    monkeypatch.setenv("HASHBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("HASHBENCH_MIRROR", raising=False)
