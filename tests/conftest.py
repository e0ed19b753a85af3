import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real cache, or picks up a mirror from the shell."""
    monkeypatch.setenv("HASHBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("HASHBENCH_MIRROR", raising=False)


@pytest.fixture(scope="module")
def split():
    """The built-in synthetic dataset's seed-0 random 8:1:1 split (generated, never downloaded)."""
    from hashbench.datasets import load_dataset
    from hashbench.splits import make_split

    return make_split(load_dataset("synthetic"), "random-8-1-1", 0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: thread start-up dominates, and on a shared machine it dominates badly."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
