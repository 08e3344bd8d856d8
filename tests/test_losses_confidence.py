"""Confidence penalties (qq, entropy), logit sharpening, Gumbel straight-through, decisiveness metrics.

Every value is checked against a float64 reference written here with plain loops.
"""

from __future__ import annotations

import math

import pytest
import torch

from softloss_cli.losses import LOSSES, PENALTIES, CrossEntropyLoss
from softloss_cli.losses.confidence import (
    annealed_temperature,
    entropy_penalty,
    gumbel_softmax_st,
    load_balance,
    qq_penalty,
)
from softloss_cli.metrics import EvalOutputs
from softloss_cli.metrics.confidence import confidence_metrics, decisive_share
from softloss_cli.tasks import Task

# --------------------------------------------------------------------------- references (float64, loops)


def ref_probs(logits: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in logits.double().tolist():
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        rows.append([v / s for v in e])
    return rows


def ref_qq(logits: torch.Tensor) -> torch.Tensor:
    out = []
    for p in ref_probs(logits):
        c = len(p)
        a = math.log(2) / math.log(c)
        out.append(sum(pc**a - pc ** (2 * a) for pc in p))
    return torch.tensor(out, dtype=torch.float64)


def ref_entropy(logits: torch.Tensor) -> torch.Tensor:
    return torch.tensor([-sum(pc * math.log(pc) for pc in p if pc > 0) for p in ref_probs(logits)],
                        dtype=torch.float64)


def ref_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.tensor([-math.log(p[int(y)]) for p, y in zip(ref_probs(logits), target)], dtype=torch.float64)


EXTREME = torch.tensor([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, 1e4], [0.0, 0.0, 0.0, 0.0], [1e4, 1e4, -1e4, -1e4]])

# --------------------------------------------------------------------------- registry


def test_penalties_registered_by_name():
    assert PENALTIES.get("qq") is qq_penalty
    assert PENALTIES.get("entropy") is entropy_penalty
    with pytest.raises(KeyError, match="unknown penalty 'nope'; choose one of: entropy, qq"):
        PENALTIES.get("nope")


# --------------------------------------------------------------------------- qq penalty


@pytest.mark.parametrize("c", [2, 3, 4, 10, 30])
def test_qq_matches_float64_reference(c):
    torch.manual_seed(c)
    z = torch.randn(64, c) * 3
    got = qq_penalty(torch.log_softmax(z, dim=1))
    assert got.shape == (64,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref_qq(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c", [2, 4, 10])
def test_qq_is_maximal_at_uniform_and_zero_at_one_hot(c):
    uniform = torch.full((1, c), -math.log(c))
    assert qq_penalty(uniform).item() == pytest.approx(c / 4, rel=1e-5)
    torch.manual_seed(0)
    random = qq_penalty(torch.log_softmax(torch.randn(2000, c) * 4, dim=1))
    assert (random <= c / 4 + 1e-5).all()
    # moving mass away from uniform lowers it
    tilted = torch.full((1, c), 1.0 / c)
    tilted[0, 0] += 0.05
    tilted[0, 1] -= 0.05
    assert qq_penalty(tilted.log()).item() < c / 4 - 1e-4
    one_hot = torch.log_softmax(torch.tensor([[1e4] + [0.0] * (c - 1)]), dim=1)
    assert qq_penalty(one_hot).item() == 0.0


def test_qq_single_class_is_zero_and_keeps_the_graph():
    z = torch.zeros(3, 1, requires_grad=True)
    value = qq_penalty(torch.log_softmax(z, dim=1))
    assert value.tolist() == [0.0, 0.0, 0.0]
    value.sum().backward()
    assert torch.equal(z.grad, torch.zeros(3, 1))


@pytest.mark.parametrize("fn,ref", [(qq_penalty, ref_qq), (entropy_penalty, ref_entropy)])
def test_penalties_finite_values_and_gradients_at_extreme_logits(fn, ref):
    z = EXTREME.clone().requires_grad_(True)
    value = fn(torch.log_softmax(z, dim=1))
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value.double(), ref(EXTREME), rtol=1e-5, atol=1e-6)
    value.sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("fn", [qq_penalty, entropy_penalty])
def test_penalties_gradient_is_zero_where_p_is_zero(fn):
    # p = 0 exactly (a -inf log-prob) must give a zero gradient, never NaN.
    lp = torch.tensor([[0.0, float("-inf"), float("-inf")]], requires_grad=True)
    value = fn(lp)
    assert value.item() == 0.0
    value.sum().backward()
    assert torch.isfinite(lp.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn,ref", [(qq_penalty, ref_qq), (entropy_penalty, ref_entropy)])
def test_penalties_accept_low_precision_log_probs(dtype, fn, ref):
    torch.manual_seed(1)
    z = (torch.randn(32, 6) * 5).to(dtype)
    value = fn(torch.log_softmax(z, dim=1))
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    # against the reference on the same rounded logits (log_softmax in low precision: loose tolerance)
    torch.testing.assert_close(value.double(), ref(z.float()), rtol=0.05, atol=0.02)


# --------------------------------------------------------------------------- entropy penalty


@pytest.mark.parametrize("c", [2, 5, 30])
def test_entropy_matches_reference_and_bounds(c):
    torch.manual_seed(c)
    z = torch.randn(50, c) * 2
    torch.testing.assert_close(entropy_penalty(torch.log_softmax(z, 1)).double(), ref_entropy(z), rtol=1e-5, atol=1e-6)
    assert entropy_penalty(torch.full((1, c), -math.log(c))).item() == pytest.approx(math.log(c), rel=1e-6)
    assert entropy_penalty(torch.log_softmax(torch.tensor([[1e4] + [0.0] * (c - 1)]), 1)).item() == 0.0


# --------------------------------------------------------------------------- penalties inside a softmax loss


@pytest.mark.parametrize("penalty,ref", [("qq", ref_qq), ("entropy", ref_entropy)])
def test_ce_with_penalty_on_logits_matches_reference(penalty, ref):
    torch.manual_seed(2)
    z, y = torch.randn(16, 5) * 2, torch.randint(0, 5, (16,))
    loss_fn = CrossEntropyLoss(penalty=penalty, penalty_weight=0.3)
    loss = loss_fn(z, y)
    expected = ref_ce(z, y).mean() + 0.3 * ref(z).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(loss_fn.last_parts) == {"main", "penalty"}
    assert loss_fn.last_parts["penalty"].item() == pytest.approx(ref(z).mean().item(), rel=1e-5)


def test_penalty_on_gate_logits_uses_the_aux_output_only():
    torch.manual_seed(3)
    z, y, gate = torch.randn(8, 5), torch.randint(0, 5, (8,)), torch.randn(8, 4) * 3
    loss_fn = CrossEntropyLoss(penalty="qq", penalty_weight=2.0, penalty_on="gate_logits")
    loss = loss_fn(z, y, gate_logits=gate)
    expected = ref_ce(z, y).mean() + 2.0 * ref_qq(gate).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_penalty_on_an_output_the_model_lacks_is_a_one_line_error():
    from softloss_cli.errors import SoftlossError

    loss_fn = CrossEntropyLoss(penalty="qq", penalty_on="gate_logits")
    with pytest.raises(SoftlossError, match=r"^loss.penalty_on=gate_logits: the model gives no such output; "
                                            r"this model's outputs: logits$"):
        loss_fn(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


def test_penalty_on_gate_gradients_match_reference():
    torch.manual_seed(8)
    z = torch.randn(4, 3, requires_grad=True)
    gate = torch.randn(4, 4, requires_grad=True)
    y = torch.tensor([0, 2, 1, 0])
    loss_fn = CrossEntropyLoss(penalty="entropy", penalty_weight=0.7, penalty_on="gate_logits")
    loss_fn(z, y, gate_logits=gate).backward()
    # float64 references: the penalty's gradient goes to the gate only, the CE's to the logits only
    g64 = gate.detach().double().requires_grad_(True)
    p = torch.softmax(g64, 1)
    (0.7 * -(p * p.log()).sum(1).mean()).backward()
    torch.testing.assert_close(gate.grad.double(), g64.grad, rtol=1e-5, atol=1e-7)
    z64 = z.detach().double().requires_grad_(True)
    torch.nn.functional.cross_entropy(z64, y).backward()
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-5, atol=1e-7)


def test_logit_scale_sharpens_softmax():
    torch.manual_seed(4)
    z, y = torch.randn(10, 6), torch.randint(0, 6, (10,))
    for alpha in (0.5, 1.0, 4.0):
        got = LOSSES.get("ce")(logit_scale=alpha)(z, y)
        assert got.item() == pytest.approx(ref_ce(alpha * z, y).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        CrossEntropyLoss(logit_scale=0.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ce_with_penalty_finite_for_extreme_low_precision_logits(dtype):
    z = (EXTREME * 6).to(dtype).requires_grad_(True)  # +-6e4: near the fp16 maximum
    loss_fn = CrossEntropyLoss(penalty="qq", penalty_weight=1.0)
    loss = loss_fn(z, torch.tensor([0, 3, 1, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad.float()).all()


# --------------------------------------------------------------------------- Gumbel straight-through


def test_gumbel_st_forward_is_exactly_one_hot():
    torch.manual_seed(5)
    y = gumbel_softmax_st(torch.randn(500, 4) * 2, tau=0.7)
    assert y.dtype == torch.float32
    assert set(torch.unique(y).tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(1), torch.ones(500))


def test_gumbel_st_gradient_is_the_relaxed_samples_gradient():
    z = torch.randn(6, 5, requires_grad=True)
    w = torch.randn(6, 5)
    gen = torch.Generator().manual_seed(11)
    (gumbel_softmax_st(z, tau=0.5, generator=gen) * w).sum().backward()
    # the same noise, relaxed sample only
    u = torch.rand(z.shape, generator=torch.Generator().manual_seed(11))
    u = u.clamp(torch.finfo(torch.float32).tiny, 1 - torch.finfo(torch.float32).eps / 2)
    z2 = z.detach().clone().requires_grad_(True)
    (torch.softmax((z2 - torch.log(-torch.log(u))) / 0.5, 1) * w).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)


def test_gumbel_argmax_is_a_sample_of_the_softmax():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    z = probs.log().expand(40_000, 4)
    y = gumbel_softmax_st(z, tau=1.0, generator=torch.Generator().manual_seed(0))
    freq = y.mean(0)
    assert torch.allclose(freq, probs, atol=0.01), freq  # 4 sigma is about 0.01 at n = 40k


def test_gumbel_soft_samples_sum_to_one_and_extreme_logits_are_finite():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], requires_grad=True)
    soft = gumbel_softmax_st(z, tau=0.1, hard=False)
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    hard = gumbel_softmax_st(z.to(torch.bfloat16), tau=0.1)
    assert hard[0].tolist() == [1.0, 0.0, 0.0]
    (soft.sum() + hard.sum()).backward()
    assert torch.isfinite(z.grad).all()


def test_gumbel_rejects_non_positive_tau():
    with pytest.raises(ValueError, match="tau must be > 0"):
        gumbel_softmax_st(torch.zeros(1, 2), tau=0.0)


def test_annealed_temperature_is_geometric_from_start_to_end():
    taus = [annealed_temperature(e, 5, 1.0, 0.0625) for e in range(5)]
    assert taus == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.0625])
    assert annealed_temperature(0, 1, 2.0, 0.5) == 2.0
    assert annealed_temperature(9, 5, 1.0, 0.5) == pytest.approx(0.5)  # clamped past the end
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        annealed_temperature(0, 5, 1.0, 0.0)


# --------------------------------------------------------------------------- decisiveness metrics


def ref_decisive(probs: torch.Tensor, t: float) -> float:
    rows = probs.double().tolist()
    return sum(1 for row in rows if max(row) >= t) / len(rows)


def test_decisive_share_matches_loop_reference():
    torch.manual_seed(6)
    probs = torch.softmax(torch.randn(300, 5) * 3, dim=1)
    for t in (0.5, 0.9, 0.99):
        assert decisive_share(probs, t) == pytest.approx(ref_decisive(probs, t))


def test_decisive_share_edges():
    p = torch.tensor([[0.9, 0.1], [0.99, 0.01], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    assert decisive_share(p, 0.9) == 0.75  # >= counts the boundary (exact in float64)
    assert decisive_share(p, 0.99) == 0.5
    assert decisive_share(torch.ones(3, 1), 0.99) == 1.0
    with pytest.raises(ValueError, match="threshold must be in"):
        decisive_share(p, 0.0)
    with pytest.raises(ValueError, match="rows must sum to 1"):
        decisive_share(torch.tensor([[0.9, 0.9]]), 0.9)
    with pytest.raises(ValueError, match="must be probabilities"):
        decisive_share(torch.tensor([[1.5, -0.5]]), 0.9)
    with pytest.raises(ValueError, match="empty"):
        decisive_share(torch.zeros(0, 3), 0.9)


def test_confidence_group_on_a_plain_model_reports_only_decisiveness():
    torch.manual_seed(7)
    logits = torch.randn(40, 4) * 4
    out = EvalOutputs(logits, torch.randint(0, 4, (40,)), torch.softmax(logits, 1))
    result = confidence_metrics(out, Task("multiclass", 4))
    assert set(result) == {"decisive_share_90", "decisive_share_99"}
    assert result["decisive_share_90"] == pytest.approx(ref_decisive(torch.softmax(logits, 1), 0.9))


# ---------------------------------------------------------------- load balancing


def _ref_load_balance(gate_logits: torch.Tensor) -> float:
    """E * sum_e f_e P_e by loops in float64 (f: argmax shares, P: mean probabilities)."""
    rows = gate_logits.double().tolist()
    b, e = len(rows), len(rows[0])
    probs = []
    for row in rows:
        m = max(row)
        ex = [math.exp(v - m) for v in row]
        probs.append([v / sum(ex) for v in ex])
    f = [0.0] * e
    for row in rows:
        f[row.index(max(row))] += 1.0 / b
    mean_p = [sum(p[j] for p in probs) / b for j in range(e)]
    return e * sum(f[j] * mean_p[j] for j in range(e))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_load_balance_matches_float64_reference(seed):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(64, 4, generator=g) * 3
    value = load_balance(torch.log_softmax(gate, dim=-1))
    assert value.item() == pytest.approx(_ref_load_balance(gate), rel=1e-5)


def test_load_balance_is_one_when_balanced_and_e_when_collapsed():
    e = 4
    balanced = torch.eye(e).repeat(8, 1) * 1e4  # every expert gets a quarter, one-hot gates
    assert load_balance(torch.log_softmax(balanced, dim=-1)).item() == pytest.approx(1.0)
    collapsed = torch.zeros(32, e)
    collapsed[:, 2] = 1e4
    assert load_balance(torch.log_softmax(collapsed, dim=-1)).item() == pytest.approx(float(e))
    assert load_balance(torch.zeros(0, e)).item() == 0.0


def test_load_balance_gradient_lowers_the_busiest_expert_and_is_finite():
    gate = torch.tensor([[2.0, 0.0, 0.0], [3.0, 1.0, 0.0], [1.0, 0.5, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    load_balance(torch.log_softmax(gate, dim=-1)).backward()
    assert torch.isfinite(gate.grad).all()
    assert gate.grad[:3, 0].gt(0).all()  # expert 0 takes 3 of 4 samples: descent lowers its logits


def test_balance_weight_adds_the_term_on_the_penalty_output():
    g = torch.Generator().manual_seed(5)
    logits, gate = torch.randn(16, 6, generator=g), torch.randn(16, 4, generator=g) * 2
    y = torch.randint(0, 6, (16,), generator=g)
    plain = CrossEntropyLoss(penalty_on="gate_logits")(logits, y, gate_logits=gate)
    loss_fn = CrossEntropyLoss(penalty_on="gate_logits", balance_weight=0.25)
    total = loss_fn(logits, y, gate_logits=gate)
    assert total.item() == pytest.approx(plain.item() + 0.25 * _ref_load_balance(gate), rel=1e-5)
    assert loss_fn.last_parts["balance"].item() == pytest.approx(_ref_load_balance(gate), rel=1e-5)
    with pytest.raises(ValueError, match="balance_weight must be >= 0"):
        CrossEntropyLoss(balance_weight=-1.0)
