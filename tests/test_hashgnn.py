"""HashGNN: the β mixing schedule and what β selects, the STE, the neighbour sampler and the
sparse mean aggregation, and that it learns the planted data (beats popularity) reproducibly."""

import numpy as np
import pytest
import torch

from baselines import hashgnn
from hashbench import seeds
from hashbench.core.autograd import GatherRows
from hashbench.core.estimators import StraightThroughEstimator, mix, mix_straight_through
from hashbench.core.sage import SampledMean, mean_operator
from hashbench.registry import FitContext, TrainData, get_method
from hashbench.method_eval import evaluate_method

FAST = {"epochs": 4, "batch_size": 1024, "lr": 1e-2}


def fit(split, name="hashgnn", **params):
    ctx = FitContext(seed=seeds.seed_sequence(0, "method"),
                     validate=lambda m: evaluate_method(m, split, "valid", (50,)))
    method = get_method(name)(64, ctx, **params)
    method.fit(TrainData("synthetic", split.n_users, split.n_items, split.train, split.valid))
    return method


def test_beta_schedule_is_the_reference_one():
    betas = hashgnn.generate_beta()
    assert len(betas) == 102
    assert betas[:6] == pytest.approx([0.0, 0.0, 0.02, 0.02, 0.04, 0.04])
    assert betas[-2:] == pytest.approx([1.0, 1.0])
    assert all(b == pytest.approx(0.02 * (i // 2)) for i, b in enumerate(betas))
    assert hashgnn.beta_at(0) == 0.0 and hashgnn.beta_at(2) == pytest.approx(0.02)
    assert hashgnn.beta_at(102) == 0.0  # main.py falls back to 0 once the list runs out


def test_beta_zero_uses_the_continuous_path_and_beta_one_the_hash_path():
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.uniform(-1, 1, (200, 8)), dtype=torch.float32, requires_grad=True)
    h = StraightThroughEstimator()(z)
    uniform = torch.from_numpy(rng.random(200))
    assert torch.equal(mix(z, h, uniform, 0.0), z)
    assert torch.equal(mix(z, h, uniform, 1.0), torch.where(z >= 0, 1.0, -1.0))
    mixed = mix(z, h, uniform, 0.3)
    continuous_rows = uniform > 0.3  # whole rows, not single bits
    assert torch.equal(mixed[continuous_rows], z[continuous_rows])
    assert torch.equal(mixed[~continuous_rows].abs(), torch.ones_like(mixed[~continuous_rows]))
    mix(z, h, uniform, 1.0).sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through: identity backward


def test_one_step_mix_is_mix_with_the_ste_bit_for_bit():
    """mix_straight_through (the training path) gives mix(z, STE(z), ...)'s values and gradients."""
    rng = np.random.default_rng(3)
    uniform = torch.from_numpy(rng.random(300))
    g = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    for beta in (0.0, 0.3, 1.0):
        z = torch.tensor(rng.uniform(-1, 1, (300, 16)), dtype=torch.float32, requires_grad=True)
        want = mix(z, StraightThroughEstimator()(z), uniform, beta)
        (want_grad,) = torch.autograd.grad(want, z, g)
        got = mix_straight_through(z, uniform, beta)
        (got_grad,) = torch.autograd.grad(got, z, g)
        assert torch.equal(got, want) and torch.equal(got_grad, want_grad)


def test_gather_rows_is_indexing_bit_for_bit():
    """GatherRows (index_select forward, accumulate-put backward) is x[index], repeats included."""
    rng = np.random.default_rng(4)
    x = torch.randn(50, 7, dtype=torch.float32, requires_grad=True)
    index = torch.from_numpy(rng.integers(-1, 50, 400))  # repeats (summed in order by the backward) and −1
    g = torch.randn(400, 7)
    got = GatherRows.apply(x, index)
    (got_grad,) = torch.autograd.grad(got, x, g)
    want = x[index]
    (want_grad,) = torch.autograd.grad(want, x, g)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad)


def test_sampler_draws_true_neighbours_without_replacement_when_it_can():
    train = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [2, 0]])
    sampler = hashgnn.NeighbourSampler(train, 3, 6)
    hop1, hop2, item_hop = sampler.trees(np.array([0, 1, 2]), np.arange(6), (3, 2), 2, np.random.default_rng(0))
    assert len(set(hop1[0])) == 3 and set(hop1[0]) <= {0, 1, 2, 3}  # degree 4 ≥ 3: distinct
    assert set(hop1[1]) == {4}  # degree 1 < 3: with replacement
    assert set(hop2[0].ravel()) <= {0, 2}
    assert list(item_hop[5]) == [-1, -1]  # no training users


def test_sampled_mean_matches_gather_and_mean():
    rng = np.random.default_rng(0)
    x = torch.randn(7, 3, dtype=torch.float32, requires_grad=True)
    neighbours = rng.integers(-1, 7, size=(5, 4))
    s, s_t = mean_operator(neighbours, 7)
    y = SampledMean.apply(s, s_t, x)
    idx = torch.from_numpy(neighbours)
    expected = (x[idx.clamp(min=0)] * (idx >= 0).unsqueeze(-1)).sum(1) / 4
    assert torch.allclose(y, expected, atol=1e-6)
    g = torch.randn(5, 3)
    (grad,) = torch.autograd.grad(y, x, g)
    (grad_expected,) = torch.autograd.grad(expected, x, g)
    assert torch.allclose(grad, grad_expected, atol=1e-6)


def test_beats_popularity_and_same_seed_same_codes(split):
    method = fit(split, **FAST)
    user_codes, item_codes = method.codes()
    assert user_codes.shape == (split.n_users, 8) and item_codes.dtype == np.uint8
    popularity = evaluate_method(fit(split, "mostpop"), split, "test", (50,))["recall@50"]
    recall = evaluate_method(method, split, "test", (50,))["recall@50"]
    assert recall > 1.3 * popularity, (recall, popularity)
    again = fit(split, **FAST)
    for a, b in zip((user_codes, item_codes), again.codes()):
        assert np.array_equal(a, b)


def test_mean_operator_is_the_scipy_coo_to_csr_matrix_and_its_transpose():
    """The compiled builder gives the matrices scipy's COO -> CSR (duplicates summed) gives."""
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    for rows, fanout, nodes in ((50, 10, 9), (200, 5, 300), (4, 3, 2)):
        neighbours = rng.integers(-1, nodes, size=(rows, fanout))
        r = np.repeat(np.arange(rows), fanout)
        c = neighbours.ravel()
        keep = c >= 0
        ref = sp.csr_matrix((np.full(int(keep.sum()), 1.0 / fanout, np.float32), (r[keep], c[keep])),
                            shape=(rows, nodes))
        for got, want in zip(mean_operator(neighbours, nodes), (ref, ref.T.tocsr())):
            want.sort_indices()
            assert tuple(got.shape) == want.shape
            assert np.array_equal(got.crow_indices().numpy(), want.indptr)
            assert np.array_equal(got.col_indices().numpy(), want.indices)
            assert np.array_equal(got.values().numpy(), want.data)


def test_beta_is_non_zero_within_the_default_schedule():
    from hashbench.registry import method_spec

    defaults = method_spec("hashgnn").defaults
    guaranteed = min(defaults["min_epochs"], defaults["epochs"])  # epochs patience cannot cut
    assert guaranteed >= 20  # the reference's schedule
    assert max(hashgnn.beta_at(epoch - 1) for epoch in range(1, guaranteed + 1)) > 0
    # what the model's loss reads at the last guaranteed epoch
    assert hashgnn.beta_at(guaranteed - 1) == pytest.approx(0.18)


def test_pair_logits_are_the_broadcast_products_bit_for_bit():
    """The compiled pair logits give the plain products' values and gradients, a −0 included."""
    rng = np.random.default_rng(5)
    b, k = 40, 3
    u0 = torch.tensor(rng.uniform(-1, 1, (b, 8)), dtype=torch.float32)
    items0 = torch.tensor(rng.uniform(-1, 1, (b * (1 + k), 8)), dtype=torch.float32)
    u0[0, :2] = torch.tensor([0.0, -0.0])  # a zero factor: autograd's sum of zero-padded slices gives +0
    g_pos, g_neg = torch.randn(b), torch.randn(b * k)
    g_pos[1] = -0.0
    results = []
    for fn in (hashgnn.pair_logits, hashgnn.pair_logits_torch):
        u, items = u0.clone().requires_grad_(), items0.clone().requires_grad_()
        pos, neg = fn(u, items, k)
        results.append((pos, neg, *torch.autograd.grad((pos, neg), (u, items), (g_pos, g_neg))))
    for got, want in zip(*results):
        assert torch.equal(got, want)
        assert torch.equal(torch.signbit(got), torch.signbit(want))


def test_foreach_adam_is_adam_bit_for_bit_and_stays_foreach_after_a_checkpoint():
    gen = torch.Generator().manual_seed(0)
    shapes = [(50, 7), (7,), (3, 4)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    runs = []
    for make in (lambda p: torch.optim.Adam(p, lr=4e-3), lambda p: hashgnn.ForeachAdam(p, lr=4e-3)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        runs.append((params, opt))
    (p_ref, adam), (p_new, foreach) = runs
    assert all(torch.equal(a, b) for a, b in zip(p_ref, p_new))
    for a, b in zip(p_ref, p_new):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(adam.state[a][key], foreach.state[b][key])
    foreach.load_state_dict(adam.state_dict())  # a checkpoint written by the plain Adam
    assert foreach.param_groups[0]["foreach"] is True


@pytest.fixture(scope="module")
def fitted_rerank(split):
    return fit(split, name="hashgnn-rerank", **FAST)


@pytest.mark.parametrize("masked", [True, False])
def test_hashgnn_rerank_reranks_the_nearest_recommendable_items_by_continuous_scores(fitted_rerank, split,
                                                                                      monkeypatch, masked):
    """As the released code: each user's top candidates by Hamming distance of sgn(z) (here
    drawn from the items the protocol can recommend), ranked by z_u·z_i; the rest after them."""
    from hashbench.retrieval import Exclusions

    m = fitted_rerank
    monkeypatch.setattr(hashgnn.HashGNNRerank, "CANDIDATES", 30)  # a fraction of the synthetic catalogue
    monkeypatch.setattr(m, "_rerank_cache", None)
    assert not m.hashing
    excluded = Exclusions.from_pairs(split.train if masked else None, split.n_users, split.n_items)
    users = np.arange(12)
    scores = m.scores_excluding(excluded)(users)
    zu, zi = (z.numpy() for z in m.continuous())
    signs_u, signs_i = np.where(zu >= 0, 1, -1), np.where(zi >= 0, 1, -1)
    for row, u in enumerate(users):
        mask = set(excluded.items[excluded.indptr[u]:excluded.indptr[u + 1]].tolist())
        distance = (signs_u[u] != signs_i).sum(1)
        allowed = [i for i in np.lexsort((np.arange(split.n_items), distance)) if i not in mask]
        candidates = np.array(allowed[:30])
        assert np.allclose(scores[row, candidates], zi[candidates] @ zu[u], atol=1e-5)
        others = np.setdiff1d(np.arange(split.n_items), candidates)
        assert (scores[row, others] == hashgnn.NOT_A_CANDIDATE).all()
    # the continuous scores reorder the Hamming candidates
    assert not np.array_equal(np.argsort(-scores, 1, kind="stable")[:, :30], np.argsort(
        np.where(scores > hashgnn.NOT_A_CANDIDATE, -(signs_u[users] @ signs_i.T), 10**6), 1, kind="stable")[:, :30])
    extras = m.extras()
    assert extras["bytes_per_item"] == 8 + 4 * 64 and "real-valued" in extras["row_mark"]
    assert not any(d.startswith("pure Hamming") for d in extras["deviations"])


def test_hashgnn_rerank_is_hashgnn_trained_once_and_ranked_its_own_way(split, tmp_path):
    """In one sweep the hashgnn cell records the re-ranked row beside its own, from one training."""
    from hashbench.executors import RunnerSpec
    from hashbench.registry import method_spec
    from hashbench.cells import Cell

    assert method_spec("hashgnn-rerank").defaults == method_spec("hashgnn").defaults
    base, variant = (Cell(name, "synthetic", 64, 0, params=FAST) for name in ("hashgnn", "hashgnn-rerank"))
    result = RunnerSpec.for_cells([base, variant], tmp_path).make_runner().compute_cell(base)
    [companion] = result.companions
    b, v = result.record, companion.record
    assert b["status"] == v["status"] == "ok" and v["extras"]["model_of"] == b["config_hash"]
    assert v["extras"]["best_epoch"] == b["extras"]["best_epoch"] and not v["hashing"]
    assert v["metrics"]["test"] != b["metrics"]["test"]
    assert [p["epoch"] for p in v["protocol_evidence"]["curve"]] == [p["epoch"] for p in b["protocol_evidence"]["curve"]]
