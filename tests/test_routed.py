"""routed_experts (model), routing_images (data), the gate/route metrics and the confidence configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from softloss_cli.data.routing import build_routing_images, family_label_maps, make_glyphs
from softloss_cli.errors import SoftlossError
from softloss_cli.losses.confidence import gumbel_softmax_st
from softloss_cli.metrics import EvalOutputs, compute_metrics, lower_is_better
from softloss_cli.metrics.confidence import active_experts, confidence_metrics, route_purity
from softloss_cli.models import MODELS, RoutedExperts
from softloss_cli.tasks import Task

SMALL = {"train_size": 300, "val_size": 100, "test_size": 100}

# --------------------------------------------------------------------------- the model


def make_model(**kwargs) -> RoutedExperts:
    torch.manual_seed(0)
    params = {"input_shape": (1, 16, 16), "num_classes": 5, "num_experts": 3, "channels": (4, 8)}
    return RoutedExperts(**{**params, **kwargs})


def test_registered_and_exported():
    assert MODELS.get("routed_experts") is RoutedExperts


def test_outputs_in_training_and_evaluation():
    model = make_model()
    x = torch.randn(6, 1, 16, 16)
    out = model.train()(x)
    assert set(out) == {"logits", "gate_logits"}
    assert out["logits"].shape == (6, 5) and out["gate_logits"].shape == (6, 3)
    out = model.eval()(x)
    assert set(out) == {"logits", "gate_logits", "hard_logits"}
    assert out["hard_logits"].shape == (6, 5)


def test_soft_output_is_the_gate_weighted_mixture_of_expert_logits():
    model = make_model().eval()
    x = torch.randn(4, 1, 16, 16)
    out = model(x)
    f = model.features(x)
    experts = model.expert_logits(f)  # [B, E, C]
    weights = torch.softmax(out["gate_logits"], 1)
    mixture = torch.stack([sum(weights[b, e] * experts[b, e] for e in range(3)) for b in range(4)])
    torch.testing.assert_close(out["logits"], mixture, rtol=1e-5, atol=1e-6)
    hard = torch.stack([experts[b, out["gate_logits"][b].argmax()] for b in range(4)])
    torch.testing.assert_close(out["hard_logits"], hard)


def test_vectorised_experts_match_a_loop_over_experts():
    model = make_model(expert_hidden=7)
    f = torch.randn(5, 8)
    got = model.expert_logits(f)
    h = torch.relu(model.expert_in(f)).view(5, 3, 7)
    for e in range(3):
        torch.testing.assert_close(got[:, e], h[:, e] @ model.expert_w[e] + model.expert_b[e])
    linear = make_model(expert_hidden=0)
    assert linear.expert_logits(f).shape == (5, 3, 5)


def test_hard_and_soft_outputs_agree_when_the_gate_is_one_hot():
    model = make_model().eval()
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.copy_(torch.tensor([0.0, 500.0, 0.0]))  # softmax is exactly one-hot in float32
    out = model(torch.randn(8, 1, 16, 16))
    assert torch.equal(torch.softmax(out["gate_logits"], 1)[:, 1], torch.ones(8))
    assert torch.equal(out["logits"], out["hard_logits"])
    metrics = confidence_metrics(
        EvalOutputs(out["logits"], torch.zeros(8, dtype=torch.long), torch.softmax(out["logits"], 1),
                    aux={"gate_logits": out["gate_logits"], "hard_logits": out["hard_logits"]}),
        Task("multiclass", 5),
    )
    assert metrics["hard_route_gap"] == 0.0 and metrics["route_agreement"] == 1.0
    assert metrics["gate_decisive_share_99"] == 1.0 and metrics["gate_mean_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["route_active_experts"] == 1.0  # every sample on expert 1


def test_second_head_gives_unrouted_aux_logits():
    model = make_model(heads="two").eval()
    x = torch.randn(3, 1, 16, 16)
    out = model(x)
    assert set(out) == {"logits", "gate_logits", "hard_logits", "aux_logits"}
    torch.testing.assert_close(out["aux_logits"], model.aux_head(model.features(x)))
    assert make_model().aux_head is None


def test_gate_temperature_divides_the_gate_logits():
    x = torch.randn(3, 1, 16, 16)
    plain = make_model().eval()(x)["gate_logits"]
    sharp = make_model(gate_temperature=0.25).eval()(x)["gate_logits"]
    torch.testing.assert_close(sharp, plain * 4)


def test_gumbel_router_routes_each_training_sample_to_one_expert():
    model = make_model(router="gumbel_st").train()
    x = torch.randn(16, 1, 16, 16)
    torch.manual_seed(1)
    out = model(x)
    experts = model.expert_logits(model.features(x))
    # in training each output row is exactly one expert's logits
    matches = (out["logits"][:, None, :] == experts).all(dim=2)
    assert matches.any(dim=1).all()
    out["logits"].sum().backward()
    assert model.gate.weight.grad is not None and torch.isfinite(model.gate.weight.grad).all()
    assert model.gate.weight.grad.abs().sum() > 0  # the straight-through gradient reaches the gate
    # at evaluation: deterministic soft mixture, as the softmax router
    model.eval()
    a, b = model(x), model(x)
    torch.testing.assert_close(a["logits"], b["logits"])


def test_soft_gumbel_router_mixes_with_the_relaxed_sample():
    model = make_model(router="gumbel_st", gumbel_hard=False).train()
    x = torch.randn(16, 1, 16, 16)
    torch.manual_seed(1)
    out = model(x)
    f = model.features(x)
    experts = model.expert_logits(f)
    assert not (out["logits"][:, None, :] == experts).all(dim=2).any(dim=1).all()  # a mixture, not one expert
    torch.manual_seed(1)
    weights = gumbel_softmax_st(model.gate(f) / model.gate_temperature, tau=model.tau, hard=False)
    torch.testing.assert_close(out["logits"], torch.einsum("be,bec->bc", weights, experts))
    assert "gumbel_hard=False" in repr(model)


def test_on_epoch_start_anneals_the_gumbel_temperature():
    model = make_model(router="gumbel_st", gumbel_tau_start=2.0, gumbel_tau_end=0.5)
    model.on_epoch_start(0, 3)
    assert model.tau == 2.0
    model.on_epoch_start(1, 3)
    assert model.tau == pytest.approx(1.0)
    model.on_epoch_start(2, 3)
    assert model.tau == pytest.approx(0.5)


def test_mlp_trunk_for_vector_inputs():
    torch.manual_seed(0)
    model = RoutedExperts((12,), 4, num_experts=2, channels=(16,)).eval()
    out = model(torch.randn(5, 12))
    assert out["logits"].shape == (5, 4) and out["gate_logits"].shape == (5, 2)


def test_low_precision_autocast_forward_is_finite():
    model = make_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train()(torch.randn(4, 1, 16, 16))
    assert all(torch.isfinite(v.float()).all() for v in out.values())


@pytest.mark.parametrize("kwargs,message", [
    ({"router": "topk"}, "model.router must be one of softmax, gumbel_st, got 'topk'"),
    ({"num_experts": 0}, "model.num_experts must be >= 1"),
    ({"gate_temperature": 0.0}, "model.gate_temperature must be > 0"),
    ({"gumbel_tau_end": -1.0}, "gumbel_tau_start and gumbel_tau_end must be > 0"),
    ({"heads": "three"}, "model.heads must be one of one, two, got 'three'"),
    ({"expert_hidden": -1}, "model.expert_hidden must be >= 0"),
    ({"channels": ()}, "model.channels must list at least one width"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(SoftlossError, match=message):
        make_model(**kwargs)


# --------------------------------------------------------------------------- the data


@pytest.fixture(scope="module")
def routing(tmp_path_factory):
    return build_routing_images(tmp_path_factory.mktemp("routing"), **SMALL)


def test_glyphs_are_distinct_and_fixed():
    g = make_glyphs(8)
    assert g.shape == (8, 5, 5) and g.dtype == bool
    for i in range(8):
        for j in range(i):
            assert (g[i] != g[j]).sum() >= 6
    assert np.array_equal(g, make_glyphs(8)) and np.array_equal(make_glyphs(5), g[:5])


@pytest.mark.parametrize("e,c", [(4, 8), (3, 3), (1, 5)])
def test_label_maps_are_latin_rectangles(e, c):
    maps = family_label_maps(e, c, np.random.default_rng(0))
    assert maps.shape == (e, c)
    for row in maps:
        assert sorted(row.tolist()) == list(range(c))  # each family uses every label once
    for col in maps.T:
        assert len(set(col.tolist())) == e  # a glyph has a different label in every family


def test_bundle_shapes_labels_and_extras(routing):
    assert routing.task.kind == "multiclass" and routing.task.num_classes == 8
    assert routing.task.extras["num_families"] == 4 and routing.input_shape == (1, 16, 16)
    assert not routing.augment_ok
    maps = np.array(routing.info["label_maps"])
    for split, n in (("train", 300), ("val", 100), ("test", 100)):
        s = routing.split(split)
        assert s.inputs.shape == (n, 1, 16, 16) and s.inputs.dtype == torch.uint8
        assert s.targets.dtype == torch.int64 and s.extras["family"].shape == (n,)
        assert s.targets.min() >= 0 and s.targets.max() < 8
        assert s.extras["family"].max() < 4
        # every label is allowed by its family's mapping
        for fam, y in zip(s.extras["family"].tolist(), s.targets.tolist()):
            assert y in maps[fam]


def test_deterministic_and_cached(tmp_path, routing):
    a = build_routing_images(tmp_path, **SMALL)
    files = sorted(p.name for p in tmp_path.iterdir())
    b = build_routing_images(tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # second call read the cache
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.train.inputs, routing.train.inputs)
    c = build_routing_images(tmp_path, **{**SMALL, "seed": 1})
    assert not torch.equal(a.train.inputs, c.train.inputs)


def test_families_are_visible_in_the_images(tmp_path):
    # the grating orientation is the family: the mean horizontal vs vertical gradient energy separates
    # family 0 (vertical stripes) from family 2 (horizontal stripes) of 4
    b = build_routing_images(tmp_path, train_size=400, val_size=0, test_size=0, image_size=32)
    x = b.train.inputs[:, 0].float()
    fam = b.train.extras["family"]
    gx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2))
    gy = (x[:, 1:, :] - x[:, :-1, :]).abs().mean((1, 2))
    assert (gx[fam == 0] > gy[fam == 0]).float().mean() > 0.95
    assert (gy[fam == 2] > gx[fam == 2]).float().mean() > 0.95


@pytest.mark.parametrize("kwargs,message", [
    ({"num_families": 9}, "data.num_families=9 must be <= data.num_classes=8"),
    ({"num_families": 0}, "data.num_families must be >= 1"),
    ({"num_classes": 1}, r"data.num_classes must be in \[2, 64\]"),
    ({"image_size": 6}, "data.image_size must be >= 8"),
    ({"train_size": 0}, "data.train_size must be > 0"),
])
def test_bad_parameters_are_refused(tmp_path, kwargs, message):
    with pytest.raises(SoftlossError, match=message):
        build_routing_images(tmp_path, **{**SMALL, **kwargs})


# --------------------------------------------------------------------------- gate and route metrics


def ref_entropy(p):
    return sum(-v * math.log(v) for v in p if v > 0)


def test_gate_and_route_metrics_match_loop_references():
    g = torch.Generator().manual_seed(0)
    n, c, e = 400, 6, 4
    logits = torch.randn(n, c, generator=g) * 3
    hard = logits + torch.randn(n, c, generator=g) * 2
    gate = torch.randn(n, e, generator=g) * 4
    targets = torch.randint(0, c, (n,), generator=g)
    family = torch.randint(0, 3, (n,), generator=g)
    out = EvalOutputs(logits, targets, torch.softmax(logits, 1), aux={"gate_logits": gate, "hard_logits": hard},
                      extras={"family": family})
    m = confidence_metrics(out, Task("multiclass", c))

    gate_p = torch.softmax(gate.double(), 1).tolist()
    assert m["gate_mean_max_prob"] == pytest.approx(sum(max(r) for r in gate_p) / n)
    assert m["gate_mean_entropy"] == pytest.approx(sum(ref_entropy(r) for r in gate_p) / n)
    assert m["gate_decisive_share_99"] == pytest.approx(sum(max(r) >= 0.99 for r in gate_p) / n)
    assert m["gate_decisive_share_90"] == pytest.approx(sum(max(r) >= 0.9 for r in gate_p) / n)
    soft_pred = [r.index(max(r)) for r in logits.tolist()]
    hard_pred = [r.index(max(r)) for r in hard.tolist()]
    soft_acc = sum(p == y for p, y in zip(soft_pred, targets.tolist())) / n
    hard_acc = sum(p == y for p, y in zip(hard_pred, targets.tolist())) / n
    assert m["soft_route_acc"] == pytest.approx(soft_acc)
    assert m["hard_route_acc"] == pytest.approx(hard_acc)
    assert m["hard_route_gap"] == pytest.approx(soft_acc - hard_acc)
    assert m["route_agreement"] == pytest.approx(sum(a == b for a, b in zip(soft_pred, hard_pred)) / n)
    route = [r.index(max(r)) for r in gate.tolist()]
    purity = sum(max(sum(1 for rr, ff in zip(route, family.tolist()) if rr == ex and ff == f) for f in range(3))
                 for ex in range(e)) / n
    assert m["route_purity"] == pytest.approx(purity)
    usage = [route.count(ex) / n for ex in range(e)]
    assert m["route_active_experts"] == pytest.approx(math.exp(-sum(u * math.log(u) for u in usage if u > 0)))
    # through the registry: the classification group runs too, and the keys do not collide
    everything = compute_metrics(out, Task("multiclass", c))
    assert everything["accuracy"] == pytest.approx(soft_acc) and everything["route_purity"] == pytest.approx(purity)


def test_active_experts_edges():
    assert active_experts(torch.zeros(5, dtype=torch.long), 4) == 1.0
    assert active_experts(torch.tensor([0, 1, 2, 3]), 4) == pytest.approx(4.0)
    assert active_experts(torch.tensor([0, 0, 1, 1]), 4) == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"route indices must be in \[0, 3\]"):
        active_experts(torch.tensor([4]), 4)
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        active_experts(torch.zeros(0, dtype=torch.long), 4)


def test_route_purity_edges():
    family = torch.tensor([0, 0, 1, 1, 2, 2])
    assert route_purity(torch.tensor([2, 2, 0, 0, 1, 1]), family) == 1.0  # a bijection
    assert route_purity(torch.zeros(6, dtype=torch.long), family) == pytest.approx(2 / 6)  # collapse
    assert route_purity(torch.tensor([0, 1, 2, 3, 4, 5]), family) == 1.0  # splitting a family costs nothing
    with pytest.raises(ValueError, match="same non-zero length"):
        route_purity(torch.tensor([0]), family)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        route_purity(torch.zeros(6), family)


def test_metric_checks_and_directions():
    out = EvalOutputs(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.full((3, 2), 0.5),
                      aux={"gate_logits": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"gate_logits must be \[N, E\] with N = 3"):
        confidence_metrics(out, Task("multiclass", 2))
    out.aux = {"hard_logits": torch.zeros(3, 5)}
    with pytest.raises(ValueError, match="hard_logits must match logits"):
        confidence_metrics(out, Task("multiclass", 2))
    assert lower_is_better("test/gate_mean_entropy") and lower_is_better("test/hard_route_gap")
    assert not lower_is_better("test/gate_decisive_share_99") and not lower_is_better("test/route_purity")


# --------------------------------------------------------------------------- configs


def test_routing_configs_compose_and_instantiate(compose_cfg):
    cfg = compose_cfg(["data=routing_images", "model=routed_experts", "data.negatives.fraction=0.5"])
    assert cfg.data.num_families == cfg.model.num_experts == 4
    model = instantiate(cfg.model, input_shape=[1, 16, 16], num_classes=cfg.data.num_classes)
    assert isinstance(model, RoutedExperts) and model.router == "softmax"


GATE_MODES = {
    "none": ("softmax", 1.0, None, 0.0),
    "temperature": ("softmax", 0.2, None, 0.0),
    "qq_penalty": ("softmax", 1.0, "qq", None),
    "entropy": ("softmax", 1.0, "entropy", None),
    "gumbel_st": ("gumbel_st", 1.0, None, 0.0),
    "qq_balance": ("softmax", 1.0, "qq", None),
}


@pytest.mark.parametrize("gate", list(GATE_MODES))
def test_confidence_experiment_gate_modes(compose_cfg, gate):
    cfg = compose_cfg(["experiment=confidence", f"gate={gate}"])
    router, temperature, penalty, weight = GATE_MODES[gate]
    assert cfg.model.num_experts == cfg.data.num_families == 4
    assert compose_cfg(["experiment=confidence", "data.num_families=3"]).model.num_experts == 3
    assert cfg.data.name == "routing_images" and cfg.model.router == router
    assert cfg.model.gate_temperature == temperature
    assert cfg.loss.penalty == penalty and cfg.loss.penalty_on == "gate_logits"
    if penalty:
        assert cfg.loss.penalty_weight > 0
    else:
        assert cfg.loss.penalty_weight == weight
    loss = instantiate(cfg.loss)
    assert loss.penalty_name == penalty
    assert (loss.balance_weight > 0) == (gate == "qq_balance")
    model = instantiate(cfg.model, input_shape=[1, cfg.data.image_size, cfg.data.image_size],
                        num_classes=cfg.data.num_classes)
    assert model.router == router and model.gate_temperature == temperature


def test_confidence_experiment_sweeps_six_treatments_and_three_seeds(compose_cfg):
    cfg = compose_cfg(["experiment=confidence"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["gate"].split(",") == list(GATE_MODES)
    assert params["seed"] == "0,1,2"
    # an explicit value still wins over the treatment's
    cfg = compose_cfg(["experiment=confidence", "gate=entropy", "loss.penalty_weight=0.1"])
    assert cfg.loss.penalty_weight == 0.1 and cfg.loss.penalty == "entropy"
