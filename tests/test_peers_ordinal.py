"""softloss's ordinal losses, heads and metrics against the two peer libraries, dlordinal and
coral-pytorch (in the ``dev`` extra): values and gradients on random logits (several class
counts, batch sizes, seeds, and logits of +-1e4 where the peer itself stays finite), to 1e-5
relative. Where softloss's convention differs on purpose, the difference is stated next to
the case and tested explicitly. The tests skip only when a peer cannot be imported.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from softloss_cli.losses import (
    ClassDistanceWeightedCELoss,
    CoralLoss,
    CornLoss,
    MceWkLoss,
    MeanClassErrorLoss,
    RankedProbabilityLoss,
    SoftOrdinalLoss,
    SquaredEMDLoss,
    UnimodalLoss,
    WeightedKappaLoss,
    clm_log_probs,
    coral_log_probs,
    unimodal_table,
)
from softloss_cli.metrics import ordinal as om

dl_losses = pytest.importorskip("dlordinal.losses")
dl_metrics = pytest.importorskip("dlordinal.metrics")
dl_soft = pytest.importorskip("dlordinal.soft_labelling")
dl_layers = pytest.importorskip("dlordinal.output_layers")
coral_losses = pytest.importorskip("coral_pytorch.losses")
coral_dataset = pytest.importorskip("coral_pytorch.dataset")
coral_layers = pytest.importorskip("coral_pytorch.layers")

RTOL = 1e-5
CLASSES = (2, 5, 30)
BATCHES = (1, 64)
SEEDS = (0, 1)
SCALES = (3.0, 1e4)  # typical logits, and logits of +-1e4


def _inputs(seed, b, c, scale, width=None, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, width or c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (b,), generator=g)
    return z.to(dtype), y


def _value_and_grad(fn, z):
    z = z.clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value, z)
    return value.detach().double(), grad.double()


def assert_same(ours_fn, peer_fn, z, peer_dtype=torch.float64, shift=0.0):
    """Values and gradients of ``ours_fn(z)`` and ``peer_fn(z)`` agree to RTOL (gradients relative
    to their largest entry); ``shift`` is a documented constant the peer's value adds.

    softloss computes in float32 (by design), so both see ``z`` rounded to float32: at +-1e4 a
    float32 logit carries ~1e-3 of rounding, which would otherwise dominate the comparison."""
    z = z.float().double()
    v1, g1 = _value_and_grad(ours_fn, z)
    v2, g2 = _value_and_grad(peer_fn, z.to(peer_dtype))
    assert torch.isfinite(v2), "the peer is not finite here: this case must not run at this scale"
    torch.testing.assert_close(v1 + shift, v2, rtol=RTOL, atol=RTOL * 1e-3)
    # An absolute floor of 1e-7 (1e-5 of 0.01): where the exact gradient is 0 (wk on a batch of
    # one, whose kappa ratio is constant) float32 leaves ~1e-8 of noise.
    torch.testing.assert_close(g1, g2, rtol=RTOL, atol=RTOL * max(g2.abs().max().item(), 1e-2))


def grid(scales=SCALES):
    return pytest.mark.parametrize("seed,b,c,scale", [(s, b, c, sc) for s in SEEDS for b in BATCHES
                                                      for c in CLASSES for sc in scales])


# ---------------------------------------------------------------- softmax losses shared with dlordinal


@grid()
def test_rps_and_emd2_equal_dlordinal_emd_loss(seed, b, c, scale):
    # dlordinal's EMDLoss sums (F_k - 1[k >= y])^2 over all C entries; the last is always 0, so it
    # is softloss's rps loss (not divided by C-1), and emd2 with unit-spaced label values.
    z, y = _inputs(seed, b, c, scale)
    peer = dl_losses.EMDLoss(num_classes=c)
    assert_same(lambda t: RankedProbabilityLoss()(t, y), lambda t: peer(t, y), z)
    assert_same(lambda t: SquaredEMDLoss()(t, y), lambda t: peer(t, y), z)


@grid(scales=(3.0,))
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_cdw_ce_equals_dlordinal_without_our_weight_normalisation(seed, b, c, scale, alpha):
    # dlordinal computes log(1 - p_i) as log(sum exp z - exp z_i + 1e-8) - log(sum exp z + 1e-8):
    # exp overflows for logits above ~700 (NaN), so only typical logits are compared, and its
    # 1e-8 (added to the *unnormalised* sum of the other classes' exp(z)) shifts the loss by
    # more than 1e-5 once that sum is tiny, as in rows with a near-one-hot softmax: such rows
    # are left out here (test_cdw_ce_is_exact_where_dlordinals_epsilon_shows covers them).
    z, y = _inputs(seed, b, c, scale)
    keep = torch.softmax(z.float().double(), dim=1).amax(dim=1) < 0.999
    z, y = z[keep], y[keep]
    if not len(y):
        pytest.skip("no row without a near-one-hot softmax at this seed")
    peer = dl_losses.CDWCELoss(num_classes=c, alpha=alpha)
    ours = ClassDistanceWeightedCELoss(alpha=alpha, normalize=False)
    assert_same(lambda t: ours(t, y), lambda t: peer(t, y), z)


def test_cdw_ce_weight_normalisation_is_the_one_deliberate_difference():
    # softloss's default divides the weights by Z = mean |i - j|^alpha over class pairs.
    z, y = _inputs(3, 64, 30, 3.0)
    peer = dl_losses.CDWCELoss(num_classes=30, alpha=1.0)(z, y)
    ours = ClassDistanceWeightedCELoss(alpha=1.0)
    z_scale = ours.weight_scale(30)
    assert z_scale == pytest.approx(2 * sum((30 - d) * d for d in range(1, 30)) / 900)
    assert ours(z, y).item() * z_scale == pytest.approx(peer.item(), rel=RTOL)


def test_cdw_ce_is_exact_where_dlordinals_epsilon_shows():
    z = torch.tensor([[2.0, -14.0, -12.0]], dtype=torch.float64)
    y = torch.tensor([2])
    log_p = torch.log_softmax(z, dim=1)[0]
    # weights |i - 2| = (2, 1, 0); log(1 - p_0) = log(p_1 + p_2) without rounding
    exact = -(2 * torch.logsumexp(log_p[1:], dim=0) + torch.log1p(-log_p[1].exp()))
    ours = ClassDistanceWeightedCELoss(alpha=1.0, normalize=False)(z, y).item()
    theirs = dl_losses.CDWCELoss(num_classes=3, alpha=1.0)(z, y).item()
    assert ours == pytest.approx(exact.item(), rel=1e-6)
    # exp(-14) + exp(-12) ~ 7e-6: dlordinal's 1e-8 moves log(1 - p_0) by ~1.4e-3
    assert abs(theirs - exact.item()) / exact.item() > 3e-5


def test_cdw_ce_stays_finite_where_dlordinal_overflows():
    z, y = _inputs(4, 16, 5, 1e4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not torch.isfinite(dl_losses.CDWCELoss(num_classes=5, alpha=1.0)(z, y))
    assert torch.isfinite(ClassDistanceWeightedCELoss(alpha=1.0, normalize=False)(z, y))


def _entropy(q: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(q, q).sum(dim=1)


@grid()
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_sord_is_dlordinal_sord_minus_the_target_entropy(seed, b, c, scale, alpha):
    # softloss's sord is KL(q || p); dlordinal's SORDLoss (prox=False) is the CE -sum q log p:
    # they differ by the mean entropy H(q) of the soft targets (a constant: same gradients).
    z, y = _inputs(seed, b, c, scale)
    peer = dl_losses.SORDLoss(alpha=alpha, num_classes=c, train_targets=y)
    q = torch.softmax(-alpha * (torch.arange(c)[None, :] - y[:, None]).abs().double(), dim=1)
    assert_same(lambda t: SoftOrdinalLoss(alpha=alpha)(t, y), lambda t: peer(t, y), z,
                shift=_entropy(q).mean().item())


# ---------------------------------------------------------------- unimodal soft labels


@pytest.fixture
def exact_edges(monkeypatch):
    """dlordinal's interval families with exact bin edges k / C (theirs: linspace(1e-9, 1 - 1e-9))."""
    import dlordinal.soft_labelling.beta_distribution as beta_mod
    import dlordinal.soft_labelling.triangular_distribution as tri_mod

    def exact(n):
        points = np.linspace(0.0, 1.0, n + 1)
        return list(zip(points[:-1], points[1:]))

    monkeypatch.setattr(beta_mod, "get_intervals", exact)
    monkeypatch.setattr(tri_mod, "get_intervals", exact)


def _peer_table(family, c, **p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "binomial":
            return dl_soft.get_binomial_soft_labels(c)
        if family == "poisson":
            return dl_soft.get_poisson_soft_labels(c)
        if family == "exponential":
            return dl_soft.get_exponential_soft_labels(c, p.get("power", 1.0), p.get("tau", 1.0))
        if family == "geometric":
            return dl_soft.get_geometric_soft_labels(c, p.get("alpha", 0.1))
        if family == "triangular":
            return dl_soft.get_triangular_soft_labels(c, p.get("alpha2", 0.05))
        return dl_soft.get_beta_soft_labels(c)


FAMILY_CASES = [
    ("binomial", {}), ("poisson", {}), ("exponential", {}), ("exponential", {"power": 2.0, "tau": 1.5}),
    ("geometric", {}), ("geometric", {"alpha": 0.3}), ("triangular", {}), ("triangular", {"alpha2": 0.01}),
]


@pytest.mark.parametrize("family,params", FAMILY_CASES)
@pytest.mark.parametrize("c", [3, 5, 14, 30])
def test_unimodal_tables_equal_dlordinal(exact_edges, family, params, c):
    ours = unimodal_table(family, c, **params).numpy()
    np.testing.assert_allclose(ours, _peer_table(family, c, **params), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("c", [3, 5, 9, 14])
def test_beta_table_equals_dlordinal_standard_set(exact_edges, c):
    np.testing.assert_allclose(unimodal_table("beta", c).numpy(), _peer_table("beta", c), rtol=1e-9, atol=1e-12)


def test_geometric_per_class_alphas_equal_dlordinal():
    alphas = [0.2, 0.05, 0.1, 0.15, 0.1]
    np.testing.assert_allclose(unimodal_table("geometric", 5, alpha=alphas).numpy(),
                               dl_soft.get_geometric_soft_labels(5, alphas), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", ["beta", "triangular"])
def test_interval_edges_are_the_one_deliberate_difference(family):
    # dlordinal's edges start at 1e-9 and end at 1 - 1e-9: its rows miss up to ~1e-8 of mass.
    ours = unimodal_table(family, 5).numpy()
    theirs = _peer_table(family, 5)
    assert 0 < np.abs(ours - theirs).max() < 1e-7
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(theirs.sum(axis=1) - 1.0).max() > 1e-10


def _peer_unimodal(family, c, eta, **p):
    ce = torch.nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "binomial":
            return dl_losses.BinomialLoss(ce, c, eta=eta)
        if family == "poisson":
            return dl_losses.PoissonLoss(ce, c, eta=eta)
        if family == "exponential":
            return dl_losses.ExponentialLoss(ce, c, p=p.get("power", 1.0), tau=p.get("tau", 1.0), eta=eta)
        if family == "geometric":
            return dl_losses.GeometricLoss(ce, c, alphas=p.get("alpha", 0.1), eta=eta)
        if family == "triangular":
            return dl_losses.TriangularLoss(ce, c, alpha2=p.get("alpha2", 0.05), eta=eta)
        return dl_losses.BetaLoss(ce, c, eta=eta)


@grid()
@pytest.mark.parametrize("family", ["binomial", "poisson", "exponential", "geometric"])
@pytest.mark.parametrize("eta", [1.0, 0.7])
def test_unimodal_ce_objective_equals_dlordinal_losses(seed, b, c, scale, family, eta):
    # dlordinal stores its soft labels in float32 (cls_probs.float()); so does softloss's cache.
    z, y = _inputs(seed, b, c, scale)
    ours = UnimodalLoss(family=family, eta=eta, objective="ce")
    peer = _peer_unimodal(family, c, eta)
    assert_same(lambda t: ours(t, y), lambda t: peer(t.float(), y), z)


@pytest.mark.parametrize("family", ["triangular", "beta"])
def test_unimodal_interval_families_equal_dlordinal_losses_with_exact_edges(exact_edges, family):
    c = 5
    z, y = _inputs(5, 64, c, 3.0)
    ours = UnimodalLoss(family=family, objective="ce")
    peer = _peer_unimodal(family, c, 1.0)
    assert_same(lambda t: ours(t, y), lambda t: peer(t.float(), y), z)


def test_unimodal_kl_objective_is_the_ce_minus_the_target_entropy():
    z, y = _inputs(6, 64, 30, 3.0)
    q = UnimodalLoss(family="binomial").soft_targets(30).float().double()
    peer = _peer_unimodal("binomial", 30, 1.0)
    assert_same(lambda t: UnimodalLoss(family="binomial")(t, y), lambda t: peer(t.float(), y), z,
                shift=_entropy(q[y]).mean().item())


# ---------------------------------------------------------------- kappa and per-class error losses


@grid()
@pytest.mark.parametrize("penalization", ["quadratic", "linear"])
def test_wk_equals_dlordinal_wkloss(seed, b, c, scale, penalization):
    # dlordinal builds its one-hot targets in float32: the peer runs in float32.
    z, y = _inputs(seed, b, c, scale)
    peer = dl_losses.WKLoss(c, penalization_type=penalization, use_logits=True)
    assert_same(lambda t: WeightedKappaLoss(penalization=penalization)(t, y), lambda t: peer(t, y), z,
                peer_dtype=torch.float32)


def test_wk_log_and_class_weights_equal_dlordinal():
    z, y = _inputs(7, 64, 5, 3.0)
    w = [1.0, 2.0, 0.5, 1.0, 3.0]
    peer = dl_losses.WKLoss(5, weight=torch.tensor(w), use_logits=True, use_logarithm=True)
    assert_same(lambda t: WeightedKappaLoss(class_weights=w, log=True)(t, y), lambda t: peer(t, y), z,
                peer_dtype=torch.float32)


@grid()
def test_mce_equals_dlordinal_mceloss(seed, b, c, scale):
    z, y = _inputs(seed, b, c, scale)
    peer = dl_losses.MCELoss(c, use_logits=True)
    assert_same(lambda t: MeanClassErrorLoss()(t, y), lambda t: peer(t, y), z, peer_dtype=torch.float32)


def test_mce_reductions_are_per_sample_where_dlordinal_is_per_class():
    z, y = _inputs(8, 40, 5, 3.0)
    ours_none = MeanClassErrorLoss(reduction="none")(z, y)
    theirs_none = dl_losses.MCELoss(5, reduction="none", use_logits=True)(z.float(), y)
    assert ours_none.shape == (40,) and theirs_none.shape == (5,)
    assert ours_none.mean().item() == pytest.approx(theirs_none.mean().item(), rel=RTOL)
    ours_sum = MeanClassErrorLoss(reduction="sum")(z, y).item()
    theirs_sum = dl_losses.MCELoss(5, reduction="sum", use_logits=True)(z.float(), y).item()
    assert ours_sum / 40 == pytest.approx(theirs_sum / 5, rel=RTOL)


@grid(scales=(3.0,))
@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_mce_wk_equals_dlordinal_mce_and_wk(seed, b, c, scale, w):
    z, y = _inputs(seed, b, c, scale)
    peer = dl_losses.MCEAndWKLoss(c, C=w, use_logits=True)
    assert_same(lambda t: MceWkLoss(wk_weight=w)(t, y), lambda t: peer(t, y), z, peer_dtype=torch.float32)


# ---------------------------------------------------------------- CORAL and CORN (coral-pytorch, dlordinal)


@grid()
@pytest.mark.parametrize("weighted", [False, True])
def test_coral_loss_equals_coral_pytorch(seed, b, c, scale, weighted):
    s, y = _inputs(seed, b, c, scale, width=c - 1)
    levels = coral_dataset.levels_from_labelbatch(y, c, dtype=torch.float64)
    w = torch.linspace(0.5, 2.0, c - 1, dtype=torch.float64) if weighted else None
    ours = CoralLoss(importance_weights=None if w is None else w.tolist())
    assert_same(lambda t: ours(torch.zeros(b, c), y, cum_logits=t),
                lambda t: coral_losses.coral_loss(t, levels, importance_weights=w), s)


@grid()
def test_corn_loss_equals_coral_pytorch_and_dlordinal(seed, b, c, scale):
    # Both peers average over the (sample, task) pairs used, not over samples; so does 'mean'.
    s, y = _inputs(seed, b, c, scale, width=c - 1)
    ours = CornLoss()
    assert_same(lambda t: ours(torch.zeros(b, c), y, cond_logits=t), lambda t: coral_losses.corn_loss(t, y, c), s)
    assert_same(lambda t: ours(torch.zeros(b, c), y, cond_logits=t), lambda t: dl_losses.CORNLoss(c)(t, y), s)


def test_coral_head_equals_coral_pytorch_layer():
    from softloss_cli.models.heads import CoralHead

    torch.manual_seed(0)
    peer = coral_layers.CoralLayer(size_in=16, num_classes=7)
    ours = CoralHead(16, 7)
    torch.testing.assert_close(ours.bias.data, peer.coral_bias.data)  # same descending initialisation
    ours.weight.weight.data.copy_(peer.coral_weights.weight.data)
    f = torch.randn(9, 16)
    out = ours(f)
    torch.testing.assert_close(out["cum_logits"], peer(f))
    # the predicted label of the papers (count of P(y > k) > 1/2) is the median of our distribution
    cdf = out["logits"].exp().cumsum(dim=1)
    median = (cdf < 0.5).sum(dim=1)
    torch.testing.assert_close(median, coral_dataset.proba_to_label(torch.sigmoid(peer(f))))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", CLASSES)
def test_corn_class_distribution_gives_coral_pytorchs_label(seed, c):
    from softloss_cli.losses import corn_log_probs

    s, _ = _inputs(seed, 64, c, 3.0, width=c - 1)
    cdf = corn_log_probs(s).exp().cumsum(dim=1)
    torch.testing.assert_close((cdf < 0.5).sum(dim=1), coral_dataset.corn_label_from_logits(s))


# ---------------------------------------------------------------- cumulative link models (dlordinal CLM)


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [3, 5, 30])
def test_clm_probabilities_and_gradients_equal_dlordinal(link, seed, c):
    torch.manual_seed(seed)
    peer = dl_layers.CLM(c, link).double()
    with torch.no_grad():
        peer.thresholds_b_.copy_(torch.randn(1) - 1.0)
        peer.thresholds_a_.copy_(torch.rand(c - 2) + 0.3)
    theta = peer._convert_thresholds(peer.thresholds_b_, peer.thresholds_a_, 0.0).detach()
    g, y = _inputs(seed, 64, c, 2.0, width=1)
    ours = clm_log_probs((theta[None, :] - g).double(), link)
    torch.testing.assert_close(ours.exp(), peer(g), rtol=RTOL, atol=1e-12)

    # dlordinal's probabilities are differences in probability space: a far tail comes out 0
    # (its NLL infinite) or with cancellation; the NLL is compared where the label's
    # probability is above 1e-6 (test_clm_is_exact_where_dlordinals_differences_round_to_zero
    # covers the tails).
    keep = peer(g).gather(1, y[:, None]).squeeze(1) > 1e-6
    g, y = g[keep], y[keep]

    def nll_ours(t):
        return -clm_log_probs(theta[None, :] - t, link).gather(1, y[:, None]).mean()

    def nll_peer(t):
        return -torch.log(peer(t).gather(1, y[:, None])).mean()

    assert_same(nll_ours, nll_peer, g)


def test_clm_is_exact_where_dlordinals_differences_round_to_zero():
    # P(y = k) far in a tail: dlordinal subtracts two probabilities near 1 and gets 0 (or a
    # rounding error); softloss takes the difference from the small side, in the log domain.
    theta = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    g = torch.tensor([[-40.0]], dtype=torch.float64)  # every cumulative probability ~ 1
    ours = clm_log_probs(theta[None, :] - g, "logit")
    assert ours[0, 0].item() == pytest.approx(-math.log1p(math.exp(-40.0)), rel=1e-12)
    # sigmoid(41) - sigmoid(40) = sigmoid(41) sigmoid(-40) (1 - e^-1): about 2.7e-18
    assert ours[0, 1].item() == pytest.approx(-40.0 + math.log1p(-math.exp(-1.0)), rel=1e-9)
    peer = dl_layers.CLM(4, "logit").double()
    with torch.no_grad():
        peer.thresholds_b_.fill_(0.0)
        peer.thresholds_a_.fill_(1.0)
    assert peer(g)[0, 1].item() == 0.0


def test_coral_distribution_is_the_logit_clm_of_the_negated_outputs():
    s, _ = _inputs(9, 32, 6, 3.0, width=5)
    s = s.sort(dim=1, descending=True).values  # ordered biases: nothing is clamped
    p = torch.sigmoid(s)
    diffs = torch.cat([1 - p[:, :1], p[:, :-1] - p[:, 1:], p[:, -1:]], dim=1)
    torch.testing.assert_close(coral_log_probs(s).exp(), diffs, rtol=1e-9, atol=1e-15)


# ---------------------------------------------------------------- metrics (dlordinal.metrics)


def _scores_covering_every_class(seed, n, c):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.arange(c), torch.randint(0, c, (n - c,), generator=g)])
    scores = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    scores[torch.arange(n), y] += 1.5  # mostly right, so that every class is also predicted
    return scores, y


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [3, 5, 30])
def test_ordinal_metrics_equal_dlordinal_when_every_class_occurs(seed, c):
    scores, y = _scores_covering_every_class(seed, 400, c)
    pred = scores.argmax(dim=1).numpy()
    yt = y.numpy()
    assert om.amae(scores, y) == pytest.approx(dl_metrics.amae(yt, pred), rel=RTOL)
    assert om.mmae(scores, y) == pytest.approx(dl_metrics.mmae(yt, pred), rel=RTOL)
    assert om.minimum_sensitivity(scores, y) == pytest.approx(dl_metrics.minimum_sensitivity(yt, pred), rel=RTOL)
    assert om.off1_accuracy(scores, y) == pytest.approx(dl_metrics.accuracy_off1(yt, pred), rel=RTOL)
    probs = torch.softmax(scores, dim=1)
    # dlordinal's RPS is not divided by C - 1; softloss's metric is (in [0, 1]).
    assert om.rps(probs, y) * (c - 1) == pytest.approx(dl_metrics.ranked_probability_score(yt, probs.numpy()), rel=RTOL)


def test_ms_and_mmae_differ_from_dlordinal_where_a_class_is_only_predicted():
    # targets use classes 0, 1, 3; class 2 is predicted but never a target.
    y = torch.tensor([0, 0, 1, 1, 3, 3])
    pred = torch.tensor([0, 2, 1, 1, 3, 2])
    scores = torch.nn.functional.one_hot(pred, 4).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_ms = dl_metrics.minimum_sensitivity(y.numpy(), pred.numpy())
    assert theirs_ms == 0.0  # dlordinal scores class 2 (recall 0/0 -> 0)
    assert om.minimum_sensitivity(scores, y) == 0.5  # softloss: present classes only
    # mmae: dlordinal counts positions among the labels that occur (0, 1, 2, 3: all here), so
    # it agrees; drop class 2 from the predictions and its positions shift (3 becomes 2).
    assert om.mmae(scores, y) == pytest.approx(dl_metrics.mmae(y.numpy(), pred.numpy()))
    y2, pred2 = torch.tensor([0, 0, 3, 3]), torch.tensor([0, 3, 3, 0])
    ours = om.mmae(torch.nn.functional.one_hot(pred2, 4).double(), y2)
    assert ours == 1.5 and dl_metrics.mmae(y2.numpy(), pred2.numpy()) == 0.5
