"""Average-K metrics against brute-force loops written here (sorting every score, with ties)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from softloss_cli.data.ambiguous import population_oracle
from softloss_cli.metrics import EvalOutputs, compute_metrics
from softloss_cli.metrics import average_k as ak
from softloss_cli.tasks import Task

SEEDS = (0, 1, 2)


def _random(seed: int, n: int, c: int, round_to: int | None = None):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=g, dtype=torch.float64)
    if round_to is not None:
        scores = torch.round(scores * round_to) / round_to  # many ties
    targets = torch.randint(0, c, (n,), generator=g)
    return scores.float(), targets


# ---------------------------------------------------------------- brute force (float64 loops)


def _ref_threshold(scores, k) -> float:
    flat = sorted((v for row in scores.double().tolist() for v in row), reverse=True)
    m = scores.shape[0] * k
    return (flat[m - 1] + flat[m]) / 2


def _ref_sets(scores, lam) -> list[set[int]]:
    return [{c for c, v in enumerate(row) if v >= lam} for row in scores.double().tolist()]


def _ref_oracle(posterior, k):
    """Greedy over entries sorted by value, splitting the last tie group evenly."""
    p = posterior.double().tolist()
    n, c = len(p), len(p[0])
    budget = n * k
    entries = sorted(((p[i][j], i, j) for i in range(n) for j in range(c)), reverse=True)
    lam = entries[budget - 1][0]
    above = [(i, j) for v, i, j in entries if v > lam]
    tied = [(i, j) for v, i, j in entries if v == lam]
    r = (budget - len(above)) / len(tied)
    f = [[0.0] * c for _ in range(n)]
    for i, j in above:
        f[i][j] = 1.0
    for i, j in tied:
        f[i][j] = r
    return f


# ---------------------------------------------------------------- threshold and sets


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n", "c", "k"), [(1, 2, 1), (50, 5, 1), (50, 5, 2), (40, 4, 3), (200, 30, 5), (30, 7, 6)])
@pytest.mark.parametrize("round_to", [None, 4])
def test_threshold_sets_and_accuracies_match_brute_force(seed, n, c, k, round_to):
    scores, targets = _random(seed, n, c, round_to)
    lam = ak.avgk_threshold(scores, k)
    assert lam == pytest.approx(_ref_threshold(scores, k), abs=1e-7)
    sets = _ref_sets(scores, lam)
    y = targets.tolist()
    assert ak.avgk_set_sizes(scores, lam).tolist() == [len(s) for s in sets]
    hits = [y[i] in sets[i] for i in range(n)]
    assert ak.avgk_accuracy(scores, targets, lam) == pytest.approx(sum(hits) / n)
    per_class = []
    for cls in range(c):
        members = [h for h, t in zip(hits, y) if t == cls]
        per_class.append(sum(members) / len(members) if members else float("nan"))
    got = ak.avgk_class_accuracy(scores, targets, lam).tolist()
    assert got == pytest.approx(per_class, nan_ok=True)
    present = [v for v in per_class if not math.isnan(v)]
    assert ak.avgk_macro_accuracy(scores, targets, lam) == pytest.approx(sum(present) / len(present))
    if round_to is None:  # without ties the sets hold exactly N*K labels
        assert sum(len(s) for s in sets) == n * k


def test_ties_at_the_boundary_enter_together():
    scores = torch.tensor([[0.9, 0.5, 0.5], [0.5, 0.1, 0.0]])
    lam = ak.avgk_threshold(scores, 1)  # 2nd and 3rd largest are both 0.5
    assert lam == 0.5
    assert ak.avgk_set_sizes(scores, lam).tolist() == [3, 1]


def test_midpoint_between_adjacent_float32_values_is_exact():
    # a and b adjacent in float32: their midpoint is not a float32; rounding it to float32
    # would land on a or b and change the sets. The sets must hold exactly N*K labels.
    a = torch.tensor(0.3, dtype=torch.float32)
    b = torch.nextafter(a, torch.tensor(0.0))
    scores = torch.stack([torch.stack([a, b, torch.tensor(0.0)]), torch.tensor([1.0, 0.0, 0.0])])
    lam = ak.avgk_threshold(scores, 1)
    assert b.item() < lam < a.item()
    assert ak.avgk_set_sizes(scores, lam).tolist() == [1, 1]
    assert ak.avgk_covered(scores, torch.tensor([1, 0]), lam).tolist() == [False, True]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ak.avgk_threshold(torch.rand(4, 3), 3), r"k must be in \[1, C\) = \[1, 3\)"),
        (lambda: ak.avgk_threshold(torch.rand(4, 3), 1.5), "k must be an int"),
        (lambda: ak.avgk_threshold(torch.rand(4, 3, dtype=torch.float64).half(), 1), "must be float32 or float64"),
        (lambda: ak.avgk_threshold(torch.tensor([[0.0, float("inf")]]), 1), r"must be finite \(no NaN or inf\)"),
        (lambda: ak.avgk_threshold(torch.rand(0, 3), 1), "is empty"),
        (lambda: ak.avgk_accuracy(torch.rand(4, 3), torch.tensor([0, 1, 2, 3]), 0.5), r"class indices in \[0, 2\]"),
        (lambda: ak.avgk_accuracy(torch.rand(4, 3), torch.zeros(4), 0.5), "integer class indices"),
        (lambda: ak.avgk_set_sizes(torch.rand(4, 3), float("nan")), "threshold must be a real number"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.slow
def test_threshold_scales_to_plantnet_validation_size():
    # Pl@ntNet-300K's validation set: N = 31,000 x C = 1,081 (33.5M scores).
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(31_000, 1_081, generator=g)
    start = time.perf_counter()
    lam = ak.avgk_threshold(scores, 5)
    sizes = ak.avgk_set_sizes(scores, lam)
    elapsed = time.perf_counter() - start
    assert sizes.sum().item() == 31_000 * 5
    assert elapsed < 20.0, f"threshold + set sizes took {elapsed:.1f} s"


# ---------------------------------------------------------------- buckets


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("levels", [3, 1000])
def test_sampled_extreme_values_equal_topk_with_heavy_ties(largest, levels):
    """Above 4M scores the threshold search samples; with few distinct values (ties across
    the cutoff) it must still give topk's values exactly."""
    g = torch.Generator().manual_seed(levels)
    n, c, m = 5000, 1000, 12_345  # 5M scores: the sampled path
    flat = (torch.randint(0, levels, (n * c,), generator=g).float() / levels)
    assert flat.numel() > 4 * ak._SAMPLE_ELEMENTS
    got = ak._extreme_values(flat, m, largest=largest, row_len=c)
    assert torch.equal(got, torch.topk(flat, m, largest=largest, sorted=True).values)


def test_class_buckets_terciles_by_count():
    counts = [5, 50, 500, 1, 7, 7, 300, 2, 40, 8]
    bucket = ak.class_buckets(counts).tolist()
    order = sorted(range(10), key=lambda c: (-counts[c], c))  # stable: ties by class index
    expected = [0] * 10
    for pos, cls in enumerate(order):
        expected[cls] = 0 if pos < 4 else (1 if pos < 7 else 2)  # 10 = 4 + 3 + 3
    assert bucket == expected
    assert ak.class_buckets([3, 3]).tolist() == [0, 1]  # fewer classes than buckets: no tail
    with pytest.raises(ValueError, match="counts must be a non-empty 1-D list of class counts >= 0"):
        ak.class_buckets([1, -2, 3])


def test_bucket_accuracy_against_loop():
    scores, targets = _random(3, 300, 9)
    lam = ak.avgk_threshold(scores, 2)
    covered = ak.avgk_covered(scores, targets, lam)
    bucket = ak.class_buckets(torch.arange(9, 0, -1))
    got = ak.avgk_bucket_accuracy(covered, targets, bucket).tolist()
    for b in range(3):
        rows = [i for i in range(300) if bucket[targets[i]] == b]
        assert got[b] == pytest.approx(sum(covered[i].item() for i in rows) / len(rows))


# ---------------------------------------------------------------- Bayes oracle


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_oracle_against_brute_force_with_ties(seed, k):
    # Few distinct posteriors shared by many samples (as synthetic types do): many ties.
    g = torch.Generator().manual_seed(seed)
    table = torch.softmax(torch.randn(4, 6, generator=g) * 2, dim=1)
    table[0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0])
    posterior = table[torch.randint(0, 4, (40,), generator=g)]
    f = ak.oracle_inclusion(posterior, k)
    ref = _ref_oracle(posterior, k)
    assert torch.allclose(f, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    assert f.sum().item() == pytest.approx(40 * k)
    expected = sum(p * w for prow, frow in zip(posterior.double().tolist(), ref) for p, w in zip(prow, frow)) / 40
    assert ak.oracle_avgk_accuracy(posterior, k) == pytest.approx(expected, rel=1e-6)


def test_population_oracle_against_brute_force():
    rng = np.random.default_rng(0)
    prior = rng.dirichlet(np.ones(5))
    probs = rng.dirichlet(np.ones(4), size=5)
    probs[1] = probs[0]  # tied entries across types
    entries = sorted(((probs[t, c], prior[t]) for t in range(5) for c in range(4)), reverse=True)
    for k in (1.0, 1.7, 2.0, 3.0):
        budget, acc = k, 0.0
        for value, weight in entries:
            take = min(weight, budget)
            acc += take * value
            budget -= take
            if budget <= 0:
                break
        assert population_oracle(prior, probs, k) == pytest.approx(acc, rel=1e-12)
    assert population_oracle(prior, probs, 4.0) == pytest.approx(1.0)


# ---------------------------------------------------------------- metric group


def _outputs(logits, targets, activation="softmax", set_source="logits", aux=None, posterior=None):
    scores = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, 1)
    return EvalOutputs(logits, targets, scores, aux=aux or {}, posterior=posterior,
                       info={"activation": activation, "set_source": set_source})


def test_group_threshold_from_reference_applied_to_split():
    val_logits, val_targets = _random(0, 300, 10)
    test_logits, test_targets = _random(1, 200, 10)
    val, test = _outputs(val_logits, val_targets), _outputs(test_logits, test_targets)
    task = Task("multiclass", 10)
    m = compute_metrics(test, task, reference=val)
    for k in (1, 2, 3, 5):
        lam = ak.avgk_threshold(torch.log_softmax(val_logits, 1), k)
        assert test.info["avgk_thresholds"][k] == lam
        test_logp = torch.log_softmax(test_logits, 1)
        assert m[f"avgk_acc_k{k}"] == ak.avgk_accuracy(test_logp, test_targets, lam)
        assert m[f"avgk_set_size_k{k}"] == pytest.approx(ak.avgk_set_sizes(test_logp, lam).double().mean().item())
        assert m[f"avgk_threshold_k{k}"] == pytest.approx(math.exp(lam))
        assert m[f"avgk_macro_acc_k{k}"] == ak.avgk_macro_accuracy(test_logp, test_targets, lam)
    own = compute_metrics(val, task)  # the validation split chooses on itself: exactly K on average
    for k in (1, 2, 3, 5):
        assert own[f"avgk_set_size_k{k}"] == pytest.approx(k)
    assert m["avgk_source_aux"] == 0.0 and m["avgk_set_source"] == 0.0


def test_group_keys_only_for_k_below_c_and_no_oracle_without_posterior():
    logits, targets = _random(2, 50, 4)
    m = compute_metrics(_outputs(logits, targets), Task("multiclass", 4))
    assert {k for k in m if k.startswith("avgk_acc_")} == {"avgk_acc_k1", "avgk_acc_k2", "avgk_acc_k3"}
    assert not any("oracle" in k for k in m)
    assert "topk_acc_k3" in m and "accuracy" in m  # top-K comes from the classification group
    assert compute_metrics(_outputs(logits[:, :1] * 0, torch.zeros(50, dtype=torch.int64)), Task("multiclass", 1)).get(
        "avgk_source_aux") is None


def test_group_reads_sets_from_the_multilabel_head_when_asked():
    logits, targets = _random(3, 120, 6)
    aux_logits, _ = _random(4, 120, 6)
    two_head = _outputs(logits, targets, set_source="aux_logits", aux={"aux_logits": aux_logits})
    m = compute_metrics(two_head, Task("multiclass", 6))
    lam = ak.avgk_threshold(aux_logits, 2)
    assert m["avgk_source_aux"] == 1.0 and m["avgk_set_source"] == 2.0
    assert m["avgk_acc_k2"] == ak.avgk_accuracy(aux_logits, targets, lam)
    assert m["avgk_threshold_k2"] == pytest.approx(1 / (1 + math.exp(-lam)))
    with pytest.raises(ValueError, match="set_source is 'aux_logits' but the outputs have no aux_logits"):
        compute_metrics(_outputs(logits, targets, set_source="aux_logits"), Task("multiclass", 6))


def test_group_sigmoid_sets_use_logits_so_saturated_scores_do_not_tie():
    # Every sigmoid here rounds to 1.0 in float32, but the logits still rank the entries.
    logits = torch.tensor([[40.0, 30.0, 20.0], [35.0, 25.0, 18.0]])
    targets = torch.tensor([0, 1])
    out = _outputs(logits, targets, activation="sigmoid")
    assert (out.scores == 1.0).all()
    m = compute_metrics(out, Task("multiclass", 3))
    assert m["avgk_set_size_k1"] == 1.0 and m["avgk_acc_k1"] == 0.5


def test_group_oracle_and_buckets():
    g = torch.Generator().manual_seed(5)
    table = torch.softmax(torch.randn(5, 9, generator=g) * 2, dim=1)
    types = torch.randint(0, 5, (400,), generator=g)
    posterior = table[types]
    targets = torch.multinomial(posterior, 1, generator=g).squeeze(1)
    logits = torch.log(posterior) + 0.3 * torch.randn(400, 9, generator=g)
    counts = torch.bincount(targets, minlength=9).tolist()
    task = Task("multiclass", 9, has_posterior=True, extras={"train_class_counts": counts})
    m = compute_metrics(_outputs(logits, targets, posterior=posterior), task)
    bucket = ak.class_buckets(counts)
    post = posterior.double().tolist()
    for k in (1, 2, 3, 5):
        f = _ref_oracle(posterior, k)
        oracle = sum(p * w for prow, frow in zip(post, f) for p, w in zip(prow, frow)) / 400
        assert m[f"avgk_oracle_acc_k{k}"] == pytest.approx(oracle, rel=1e-9)
        assert m[f"avgk_oracle_gap_k{k}"] == pytest.approx(oracle - m[f"avgk_acc_k{k}"])
        for b, name in enumerate(ak.BUCKETS):
            cols = [c for c in range(9) if bucket[c] == b]
            hits = sum(post[i][c] * f[i][c] for i in range(400) for c in cols)
            mass = sum(post[i][c] for i in range(400) for c in cols)
            assert m[f"avgk_oracle_{name}_acc_k{k}"] == pytest.approx(hits / mass, rel=1e-9)
            rows = [i for i in range(400) if bucket[targets[i]] == b]
            lam = ak.avgk_threshold(torch.log_softmax(logits, 1), k)
            covered = ak.avgk_covered(torch.log_softmax(logits, 1), targets, lam)
            assert m[f"avgk_{name}_acc_k{k}"] == pytest.approx(sum(covered[i].item() for i in rows) / len(rows))
        present = [c for c in range(9) if counts[c] > 0]
        per_class = [sum(post[i][c] * f[i][c] for i in range(400)) / sum(post[i][c] for i in range(400)) for c in present]
        assert m[f"avgk_oracle_macro_acc_k{k}"] == pytest.approx(sum(per_class) / len(per_class), rel=1e-9)
    # A model that outputs the posterior itself sits at the oracle (up to ties and label noise).
    exact = compute_metrics(_outputs(torch.log(posterior), targets, posterior=posterior), task)
    assert abs(exact["avgk_oracle_gap_k2"]) < 0.08


def test_buckets_fall_back_to_validation_labels():
    val_logits, val_targets = _random(6, 300, 6)
    test_logits, test_targets = _random(7, 300, 6)
    val_targets[:150] = 0  # class 0 is the head class of the validation labels
    task = Task("multiclass", 6)
    m = compute_metrics(_outputs(test_logits, test_targets), task, reference=_outputs(val_logits, val_targets))
    bucket = ak.class_buckets(torch.bincount(val_targets, minlength=6))
    assert bucket[0] == 0
    lam = ak.avgk_threshold(torch.log_softmax(val_logits, 1), 1)
    covered = ak.avgk_covered(torch.log_softmax(test_logits, 1), test_targets, lam)
    assert m["avgk_head_acc_k1"] == pytest.approx(ak.avgk_bucket_accuracy(covered, test_targets, bucket)[0].item())


def test_classification_group_normalises_sigmoid_rows():
    # Sigmoid-trained baselines (bce_an...) are scored by the classification group too:
    # probability metrics must see rows that sum to 1.
    from softloss_cli.metrics import classification as cm

    logits, targets = _random(8, 100, 5)
    out = _outputs(logits * 3, targets, activation="sigmoid")
    m = compute_metrics(out, Task("multiclass", 5))
    probs = out.scores.double() / out.scores.double().sum(1, keepdim=True)
    assert m["brier"] == pytest.approx(cm.brier(probs, targets))
    assert m["mean_max_prob"] == pytest.approx(cm.mean_max_prob(probs))
    assert m["accuracy"] == cm.accuracy(out.scores, targets)


def test_descriptive_average_k_metrics_have_no_direction():
    from softloss_cli.metrics import metric_direction

    for name in ("avgk_set_size_k2", "avgk_threshold_k2", "avgk_empty_rate_k2", "avgk_source_aux",
                 "avgk_set_source", "avgk_oracle_acc_k2", "avgk_oracle_macro_acc_k2",
                 "avgk_oracle_head_acc_k2", "avgk_oracle_tail_acc_k3"):
        assert metric_direction(f"test/{name}") == "none", name
    assert metric_direction("test/avgk_oracle_gap_k2") == "lower"
    assert metric_direction("test/avgk_acc_k2") == "higher"
    assert metric_direction("test/avgk_tail_acc_k2") == "higher"
