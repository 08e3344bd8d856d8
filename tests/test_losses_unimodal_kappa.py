"""Unimodal soft-label losses and the kappa / per-class-error losses against float64 references
written here (and scikit-learn's kappa), edge cases and bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from softloss_cli.losses import (
    UNIMODAL_FAMILIES,
    MceWkLoss,
    MeanClassErrorLoss,
    UnimodalLoss,
    WeightedKappaLoss,
    unimodal_table,
)
from softloss_cli.metrics import classification as cm
from softloss_cli.tasks import Task


def _inputs(seed, b, c, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=torch.float64) * scale, torch.randint(0, c, (b,), generator=g)


def _binom(n, k, p):
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


# ---------------------------------------------------------------- unimodal tables


@pytest.mark.parametrize("c", [3, 5, 30])
def test_binomial_geometric_and_exponential_tables_match_their_formulas(c):
    binom = unimodal_table("binomial", c).numpy()
    for j in range(c):
        p = 0.1 + 0.8 * j / (c - 1)
        np.testing.assert_allclose(binom[j], [_binom(c - 1, k, p) for k in range(c)], rtol=1e-10, atol=1e-300)
    geo = unimodal_table("geometric", c, alpha=0.2).numpy()
    for j in range(c):
        weights = [0.2 ** abs(k - j) for k in range(c) if k != j]
        expected = [0.8 if k == j else 0.2 * 0.2 ** abs(k - j) / sum(weights) for k in range(c)]
        np.testing.assert_allclose(geo[j], expected, rtol=1e-10)
    expo = unimodal_table("exponential", c, power=2.0, tau=3.0).numpy()
    for j in range(c):
        e = [math.exp(-((k - j) ** 2) / 3.0) for k in range(c)]
        np.testing.assert_allclose(expo[j], [v / sum(e) for v in e], rtol=1e-10)


@pytest.mark.parametrize("family", ["binomial", "poisson", "triangular", "exponential", "geometric"])
@pytest.mark.parametrize("c", [3, 7, 30])
def test_every_row_is_a_unimodal_distribution(family, c):
    t = unimodal_table(family, c)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(c, dtype=torch.float64), atol=1e-9, rtol=0)
    assert (t >= 0).all()
    for row in t:
        d = row.diff()
        mode = int(row.argmax())
        assert (d[:mode] >= -1e-15).all() and (d[mode:] <= 1e-15).all(), (family, row)


def test_beta_standard_set_and_custom_parameters():
    t = unimodal_table("beta", 5)
    torch.testing.assert_close(t.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (t.argmax(dim=1) == torch.arange(5)).all()
    params = [[1.0, 8.0, 1.0], [6.0, 14.0, 1.0], [12.0, 12.0, 1.0], [14.0, 6.0, 1.0], [8.0, 1.0, 1.0]]
    torch.testing.assert_close(unimodal_table("beta", 5, beta_params=params), t)
    # Beta(2, 2) with a = 1 on two bins: I(1/2; 2, 2) = 1/2 each
    torch.testing.assert_close(unimodal_table("beta", 2, beta_params=[[2, 2, 1], [2, 2, 1]]),
                               torch.full((2, 2), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"family=beta has a standard parameter set for 3 to 14 classes, not 30"):
        unimodal_table("beta", 30)


def test_beta_with_real_parameters_uses_the_incomplete_beta():
    scipy_special = pytest.importorskip("scipy.special")
    t = unimodal_table("beta", 3, beta_params=[[1.5, 4.5, 1.0], [3.3, 3.3, 2.0], [4.5, 1.5, 1.0]])
    edges = np.array([0, 1 / 3, 2 / 3, 1.0])
    expected = np.diff(scipy_special.betainc(3.3, 3.3, edges**2.0))
    np.testing.assert_allclose(t[1].numpy(), expected, rtol=1e-10)


# ---------------------------------------------------------------- unimodal loss


def ref_unimodal(z, y, q_table, objective):
    out = []
    for row, label in zip(z.tolist(), y.tolist()):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        q = q_table[label].tolist()
        ce = -sum(qk * (v - lse) for qk, v in zip(q, row))
        ent = -sum(qk * math.log(qk) for qk in q if qk > 0)
        out.append(ce - ent if objective == "kl" else ce)
    return sum(out) / len(out)


@pytest.mark.parametrize("family", ["binomial", "poisson", "triangular", "exponential", "geometric"])
@pytest.mark.parametrize("objective", ["kl", "ce"])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_unimodal_loss_matches_a_float64_loop(family, objective, eta):
    z, y = _inputs(1, 40, 9)
    loss = UnimodalLoss(family=family, objective=objective, eta=eta)
    q = loss.soft_targets(9).float().double()  # the cache holds float32 targets
    assert loss(z, y).item() == pytest.approx(ref_unimodal(z, y, q, objective), rel=1e-5)


def test_unimodal_gradient_is_softmax_minus_target_and_kl_is_zero_at_the_target():
    z, y = _inputs(2, 16, 6)
    z.requires_grad_(True)
    loss = UnimodalLoss(family="geometric", alpha=0.3)
    loss(z, y).backward()
    q = loss.soft_targets(6)[y]
    torch.testing.assert_close(z.grad, (torch.softmax(z, dim=1) - q) / 16, rtol=1e-5, atol=1e-7)
    at_target = torch.log(loss.soft_targets(6).float())[y]
    assert abs(loss(at_target, y).item()) < 1e-6


@pytest.mark.parametrize("family", ["binomial", "exponential", "geometric"])
def test_unimodal_loss_is_finite_for_huge_logits_and_low_precision(family):
    z = (torch.randn(8, 30) * 1e4).to(torch.bfloat16).requires_grad_(True)
    y = torch.randint(0, 30, (8,))
    value = UnimodalLoss(family=family)(z, y)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(z.grad.float()).all()


def test_beta_is_refused_before_training_for_a_class_count_without_parameters():
    loss = UnimodalLoss(family="beta")
    with pytest.raises(ValueError, match=r"loss.beta_params"):
        loss.bind_task(Task("ordinal", 30))
    UnimodalLoss(family="beta").bind_task(Task("ordinal", 5))


@pytest.mark.parametrize("kwargs,message", [
    ({"family": "gaussian"}, r"family must be one of binomial, poisson, beta, triangular, exponential, geometric"),
    ({"objective": "mse"}, r"objective must be one of kl, ce"),
    ({"eta": 1.5}, r"eta must be in \[0, 1\]"),
    ({"tau": 0.0}, r"tau and power must be > 0"),
    ({"alpha2": 0.7}, r"alpha2 must be in \(0, 0.5\)"),
    ({"alpha": 1.0}, r"alpha must be in \[0, 1\)"),
])
def test_bad_unimodal_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UnimodalLoss(**kwargs)


def test_families_are_the_documented_six():
    assert UNIMODAL_FAMILIES == ("binomial", "poisson", "beta", "triangular", "exponential", "geometric")


# ---------------------------------------------------------------- kappa and per-class error


def ref_wk(z, y, c, quadratic=True):
    p = torch.softmax(z, dim=1).tolist()
    w = [[((i - j) / (c - 1)) ** 2 if quadratic else abs(i - j) / (c - 1) for j in range(c)] for i in range(c)]
    n = len(p)
    observed = sum(p[b][i] * w[i][y[b]] for b in range(n) for i in range(c))
    hist_a = [sum(p[b][i] for b in range(n)) for i in range(c)]
    hist_b = [sum(1 for b in range(n) if y[b] == j) for j in range(c)]
    expected = sum(w[i][j] * hist_a[i] * hist_b[j] for i in range(c) for j in range(c)) / n
    return observed / (expected + 1e-10)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("c", [2, 5, 30])
@pytest.mark.parametrize("quadratic", [True, False])
def test_wk_matches_a_float64_loop(seed, c, quadratic):
    z, y = _inputs(seed, 50, c)
    loss = WeightedKappaLoss(penalization="quadratic" if quadratic else "linear")
    assert loss(z, y).item() == pytest.approx(ref_wk(z, y.tolist(), c, quadratic), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_minus_wk_at_one_hot_predictions_is_sklearns_qwk(seed):
    z, y = _inputs(seed, 200, 7)
    pred = z.argmax(dim=1)
    one_hot = torch.nn.functional.one_hot(pred, 7).double() * 200.0  # softmax = one-hot to float32
    kappa = cohen_kappa_score(y.numpy(), pred.numpy(), weights="quadratic", labels=list(range(7)))
    assert 1.0 - WeightedKappaLoss(epsilon=0.0)(one_hot, y).item() == pytest.approx(kappa, abs=1e-6)


def test_wk_is_finite_for_huge_logits_and_refuses_per_sample_reductions():
    z = (torch.randn(64, 30) * 1e4).requires_grad_(True)
    y = torch.randint(0, 30, (64,))
    value = WeightedKappaLoss()(z, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    for cls in (WeightedKappaLoss, MceWkLoss):
        with pytest.raises(ValueError, match=r"is a batch-level loss: reduction must be 'mean'"):
            cls(reduction="none")
    with pytest.raises(ValueError, match=r"penalization must be one of quadratic, linear"):
        WeightedKappaLoss(penalization="cubic")
    with pytest.raises(ValueError, match=r"wk_weight must be in \[0, 1\]"):
        MceWkLoss(wk_weight=2.0)


@pytest.mark.parametrize("c", [2, 5, 30])
def test_mce_is_the_brier_score_over_c(c):
    z, y = _inputs(3, 64, c)
    brier = cm.brier(torch.softmax(z, dim=1), y)
    assert MeanClassErrorLoss()(z, y).item() == pytest.approx(brier / c, rel=1e-5)
    weights = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
    p = torch.softmax(z, dim=1)
    expected = (((p - torch.nn.functional.one_hot(y, c)) ** 2) * weights).mean()
    assert MeanClassErrorLoss(class_weights=weights.tolist())(z, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mce_wk_is_the_weighted_sum_and_logs_its_parts():
    z, y = _inputs(4, 64, 6)
    loss = MceWkLoss(wk_weight=0.3)
    value = loss(z, y).item()
    wk, mce = WeightedKappaLoss()(z, y).item(), MeanClassErrorLoss()(z, y).item()
    assert value == pytest.approx(0.3 * wk + 0.7 * mce, rel=1e-6)
    assert set(loss.last_parts) == {"main", "wk", "mce"}
    assert loss.last_parts["wk"].item() == pytest.approx(wk, rel=1e-6)
