"""The contract every built-in method passes on the built-in synthetic dataset.

The cases live in hashbench.testing.MethodContract (shipped, so third-party methods run the
same ones). A new method joins with one line in FAST_PARAMS (small settings so the suite
stays quick).
"""

from hashbench.registry import method_names
from hashbench.testing import MethodContract

FAST_PARAMS = {
    "mostpop": {},
    "lsh": {"svd_dim": 8},  # 8 planted clusters: the signal is in the top singular directions
    "proposed": {"epochs": 30, "eval_every": 5},
    "lightgcn": {"epochs": 30, "eval_every": 5},
    "bgch": {"epochs": 15, "batch_size": 1024, "eval_every": 5, "lr": 1e-2},
    "bgch-scaled": {"epochs": 15, "batch_size": 1024, "eval_every": 5, "lr": 1e-2},
    "hashgnn": {"epochs": 4, "batch_size": 1024, "lr": 1e-2},
    "hashgnn-rerank": {"epochs": 4, "batch_size": 1024, "lr": 1e-2},
    "dcf": {"init_iters": 5, "max_iters": 6, "patience": 3},
    "ccsr": {"batch_size": 4096, "epochs": 6, "eval_every": 3, "lr": 0.01},
    "hashrec": {"batch_size": 3000, "epochs": 12, "eval_every": 3, "lr": 0.01},
}


def test_every_registered_method_is_in_the_contract():
    assert set(method_names()) <= set(FAST_PARAMS), "add the new method to FAST_PARAMS"


# one test class per method: TestContract_proposed, ... (a class per method keeps its fitted
# model shared by its cases and lets -k select one method)
for _name, _params in FAST_PARAMS.items():
    _cls = type(f"TestContract_{_name.replace('-', '_')}", (MethodContract,), {"method": _name, "params": _params})
    globals()[_cls.__name__] = _cls
del _name, _params, _cls
