"""Presence and Average-K scenarios: data builders, config composition (fast) and the real
CLI end to end (slow): run directories, metrics.json keys, figures and one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY

from softloss_cli.data import build_data
from softloss_cli.data.ambiguous import build_ambiguous_images, population_oracle
from softloss_cli.data.multilabel_shapes import CATEGORY_NAMES, DISTRACTORS, LABELLED, build_multilabel_shapes
from softloss_cli.errors import SoftlossError

SMALL = {"train_size": 600, "val_size": 200, "test_size": 200}


# ---------------------------------------------------------------- data builders


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return build_multilabel_shapes(tmp_path_factory.mktemp("shapes"), **SMALL)


@pytest.fixture(scope="module")
def ambiguous(tmp_path_factory):
    return build_ambiguous_images(tmp_path_factory.mktemp("ambiguous"), **SMALL)


def test_multilabel_shapes_bundle(shapes):
    assert shapes.task.kind == "multilabel" and shapes.task.num_classes == 10
    assert shapes.task.class_names == CATEGORY_NAMES
    assert shapes.input_shape == (3, 32, 32) and len(shapes.mean) == 3
    for split, n in (("train", 600), ("val", 200), ("test", 200)):
        s = shapes.split(split)
        assert s.inputs.shape == (n, 3, 32, 32) and s.inputs.dtype == torch.uint8
        assert s.targets.shape == (n, 10) and s.targets.dtype == torch.float32
        assert set(s.targets.unique().tolist()) <= {0.0, 1.0}
        assert s.targets.sum(1).max() <= 3 and s.extras["distractors"].max() <= 2
    empty = (shapes.train.targets.sum(1) == 0).float().mean().item()
    assert 0.08 < empty < 0.23  # about 15%
    # Labelled and distractor pairs share every shape and colour: presence needs the conjunction.
    assert {s for s, _ in LABELLED} == {s for s, _ in DISTRACTORS}
    assert {c for _, c in LABELLED} == {c for _, c in DISTRACTORS}
    assert shapes.task.extras["train_class_counts"] == shapes.train.targets.sum(0).long().tolist()


def test_multilabel_shapes_is_deterministic_and_cached(tmp_path, shapes):
    again = build_multilabel_shapes(tmp_path, **SMALL)
    assert torch.equal(again.train.inputs, shapes.train.inputs) and torch.equal(again.test.targets, shapes.test.targets)
    assert len(list(tmp_path.glob("multilabel_shapes-*.npz"))) == 1
    other = build_multilabel_shapes(tmp_path, **{**SMALL, "seed": 1})
    assert not torch.equal(other.train.inputs, shapes.train.inputs)


def test_empty_images_still_hold_distractors(shapes):
    empty = shapes.train.targets.sum(1) == 0
    assert (shapes.train.extras["distractors"][empty] > 0).any()
    # An image with no object at all is a flat background: its pixel spread is small.
    blank = empty & (shapes.train.extras["distractors"] == 0)
    if blank.any():
        assert shapes.train.inputs[blank].float().std(dim=(1, 2, 3)).max() < 20


def test_ambiguous_bundle_posterior_and_oracle(ambiguous):
    task = ambiguous.task
    assert task.kind == "multiclass" and task.num_classes == 30 and task.has_posterior
    for split in ("train", "val", "test"):
        s = ambiguous.split(split)
        assert s.targets.dtype == torch.int64 and s.posterior.shape == (len(s), 30)
        assert torch.allclose(s.posterior.sum(1), torch.ones(len(s)), atol=1e-5)
        # every label is possible under its own posterior, which has 1 to 5 classes
        assert (s.posterior.gather(1, s.targets[:, None]) > 0).all()
        support = (s.posterior > 0).sum(1)
        assert support.min() >= 1 and support.max() <= 5
    assert task.extras["train_class_counts"] == torch.bincount(ambiguous.train.targets, minlength=30).tolist()
    oracle = task.extras["oracle_avgk_acc"]
    assert list(oracle) == ["1", "2", "3", "5"]
    assert 0 < oracle["1"] < oracle["2"] < oracle["3"] <= oracle["5"] == pytest.approx(1.0)
    # the posterior of a type is shared by all its samples: same type, same posterior
    types = ambiguous.test.extras["type"]
    same = types == types[0]
    assert torch.equal(ambiguous.test.posterior[same], ambiguous.test.posterior[0].expand(int(same.sum()), 30))


def test_ambiguous_labels_follow_the_posterior(tmp_path):
    # 20,000 labels drawn from the generator's distributions: the empirical frequencies match.
    bundle = build_ambiguous_images(tmp_path, train_size=20000, val_size=0, test_size=0, image_size=16)
    expected = bundle.train.posterior.double().mean(0)
    observed = torch.bincount(bundle.train.targets, minlength=30).double() / 20000
    assert torch.allclose(observed, expected, atol=0.01)
    types = bundle.info["types"]
    prior = np.array([t["prior"] for t in types])
    probs = np.zeros((len(types), 30))
    for i, t in enumerate(types):
        for c, p in t["labels"].items():
            probs[i, int(c)] = p
    assert bundle.task.extras["oracle_avgk_acc"]["2"] == pytest.approx(population_oracle(prior, probs, 2))
    # rare types exist: the least frequent types have few training samples (Zipf: ~48x fewer)
    counts = bundle.info["train_type_counts"]
    assert min(counts) < 0.01 * 20000 and max(counts) > 20 * min(counts)


@pytest.mark.parametrize(
    ("builder", "params", "message"),
    [
        (build_multilabel_shapes, {"empty_fraction": 1.5}, r"data.empty_fraction must be in \[0, 1\), got 1.5"),
        (build_multilabel_shapes, {"max_objects": 11}, r"data.max_objects must be in \[1, 10\], got 11"),
        (build_multilabel_shapes, {"max_distractors": 7}, "one grid cell per object"),
        (build_multilabel_shapes, {"train_size": 0}, "data.train_size must be > 0, got 0"),
        (build_ambiguous_images, {"num_types": 60}, r"data.num_types must be in \[1, 48\]"),
        (build_ambiguous_images, {"max_labels": 0}, r"data.max_labels must be in \[1, num_classes=30\], got 0"),
        (build_ambiguous_images, {"concentration": 0}, "data.concentration must be > 0, got 0.0"),
        (build_ambiguous_images, {"image_size": 8}, "data.image_size must be >= 16 pixels"),
    ],
)
def test_builder_refuses_bad_parameters(tmp_path, builder, params, message):
    with pytest.raises(SoftlossError, match=message):
        builder(tmp_path, **{**SMALL, **params})


# ---------------------------------------------------------------- config composition


@pytest.mark.parametrize("name", ["multilabel_shapes", "ambiguous_images"])
def test_data_config_builds_through_build_data(compose_cfg, tmp_path, name):
    from omegaconf import OmegaConf

    cfg = compose_cfg([f"data={name}", "data.train_size=64", "data.val_size=32", "data.test_size=32"])
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    assert {"name", "batch_size", "eval_batch_size", "num_workers", "augment"} <= set(data_cfg)
    bundle = build_data(data_cfg, tmp_path)
    assert bundle.name == name and len(bundle.train) == 64


@pytest.mark.parametrize(
    ("preset", "data", "losses"),
    [
        ("presence", "multilabel_shapes", "softmax_ml,bce,asl,focal"),
        ("average_k", "ambiguous_images", "ce,bce_an,bce_wan,epr,two_head"),
    ],
)
def test_experiment_preset_composes(compose_cfg, preset, data, losses):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"experiment={preset}"], return_hydra_config=True)
    assert cfg.data.name == data
    assert cfg.hydra.sweeper.params.loss == losses
    assert str(cfg.hydra.sweeper.params.seed) == "0,1,2"
    assert cfg.optim._target_ == "torch.optim.AdamW"
    heads = "two" if preset == "average_k" else "one"
    assert cfg.model.heads == heads
    model = instantiate(cfg.model, input_shape=[3, 32, 32], num_classes=cfg.data.get("num_classes", 10))
    out = model(torch.zeros(2, 3, 32, 32))
    assert (isinstance(out, dict) and "aux_logits" in out) == (heads == "two")
    for loss in losses.split(","):
        cfg = compose_cfg([f"experiment={preset}", f"loss={loss}"])
        instantiate(cfg.loss)


# ---------------------------------------------------------------- end to end (the real CLI)


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_presence_run_end_to_end(tiny_train):
    proc, run = tiny_train("experiment=presence", "loss=bce")
    m = _metrics(run)
    for split in ("val", "test"):
        for name in ("map", "f1_micro", "f1_macro", "exact_match", "empty_fpr", "mean_active", "mean_labels"):
            assert f"{split}/{name}" in m and math.isfinite(m[f"{split}/{name}"])
    assert not any(k.startswith("test/avgk") or k == "test/accuracy" for k in m)
    assert (run / "checkpoints" / "best.pt").is_file() and any((run / "tb").iterdir())
    with np.load(run / "predictions" / "test.npz") as npz:
        assert npz["logits"].shape == (128, 10) and npz["targets"].shape == (128, 10)
    assert (run / "plots" / "test_ap_per_category.png").is_file()
    assert (run / "plots" / "test_active_count.png").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_average_k_two_head_run_end_to_end(tiny_train):
    proc, run = tiny_train("experiment=average_k", "loss=two_head")
    m = _metrics(run)
    assert m["test/avgk_source_aux"] == 1.0 and m["val/avgk_source_aux"] == 1.0
    assert m["test/avgk_set_source"] == 2.0
    for previous, k in zip((1, 1, 2, 3), (1, 2, 3, 5)):
        for name in ("acc", "macro_acc", "set_size", "threshold", "oracle_acc", "oracle_gap", "head_acc", "tail_acc"):
            assert math.isfinite(m[f"test/avgk_{name}_k{k}"])
        assert m[f"val/avgk_set_size_k{k}"] == pytest.approx(k, abs=0.05)  # chosen on val itself
        assert m[f"test/avgk_oracle_acc_k{k}"] >= m[f"test/avgk_oracle_acc_k{previous}"]
    assert "test/topk_acc_k5" in m and "test/accuracy" in m
    with np.load(run / "predictions" / "test.npz") as npz:
        assert npz["aux_logits"].shape == npz["logits"].shape == (128, 30)
    assert (run / "plots" / "test_avgk_set_size.png").is_file()
    assert (run / "plots" / "test_avgk_by_bucket.png").is_file()


@pytest.mark.slow
def test_average_k_preset_multirun(cli, tmp_path, data_root):
    # The preset's sweep, cut to one job from the command line (command-line values win).
    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", "experiment=average_k", "loss=bce_wan", "seed=0", *TINY,
               f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert len(jobs) == 1
    m = _metrics(jobs[0])
    assert m["test/avgk_source_aux"] == 0.0  # a sigmoid baseline: sets from its own (main) head
    assert m["test/avgk_set_source"] == 1.0  # ... and from its sigmoids
    assert 0.0 < m["test/avgk_threshold_k1"] < 1.0
    assert "heads: two" in (jobs[0] / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_presence_softmax_never_activates_two_categories(tiny_train):
    proc, run = tiny_train("experiment=presence", "loss=softmax_ml")
    m = _metrics(run)
    assert m["test/mean_active"] <= 1.0 and m["test/mean_labels"] > 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=ordinal_images", "loss=softmax_ml"],
         "loss=softmax_ml does not fit data=ordinal_images (task kind 'ordinal'); losses for ordinal data: "),
        (["data=ordinal_images", "loss=bce", "data.negatives.fraction=0.5"],
         "loss=bce does not fit data=ordinal_images (task kind 'partial')"),
        (["data=multilabel_shapes", "loss=bce_an"],
         "loss=bce_an does not fit data=multilabel_shapes (task kind 'multilabel'); "
         "losses for multilabel data: asl, bce, focal, softmax_ml"),
        (["data=ambiguous_images", "loss=two_head"], "loss=two_head needs a second head: add model.heads=two"),
        (["data=multilabel_shapes", "data.empty_fraction=1.5"], "data.empty_fraction must be in [0, 1), got 1.5"),
        (["data=ambiguous_images", "data.num_types=60"], "data.num_types must be in [1, 48]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_train, overrides, message):
    proc, run = tiny_train(*overrides, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softloss: error: ") and message in lines[0], proc.stderr
    assert not (run / "metrics.json").exists()
