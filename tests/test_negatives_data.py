"""The negatives wrapper (data/negatives.py), its configs, and the partial-task metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from softloss_cli.data import build_data
from softloss_cli.data.base import DataBundle, TensorSplit
from softloss_cli.data.digits import build_digits
from softloss_cli.data.loaders import EpochLoader
from softloss_cli.data.negatives import PartialTargets, nearest_mean_negatives, with_negatives
from softloss_cli.errors import SoftlossError
from softloss_cli.metrics import EvalOutputs, compute_metrics, lower_is_better
from softloss_cli.metrics.negative import (
    logit_gap,
    neg_violation_prob,
    neg_violation_rate,
    negative_metrics,
    positive_accuracy,
)
from softloss_cli.tasks import Task

DATA_CONFIGS = Path(__file__).resolve().parents[1] / "softloss_cli" / "configs" / "data"
SINGLE_LABEL_CONFIGS = ("digits", "ordinal_images", "fake", "cifar10", "cifar100", "mnist", "fashion_mnist",
                        "image_folder", "routing_images")


def toy_bundle(n=400, c=7, kind="multiclass", seed=0) -> DataBundle:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    # images whose mean depends on the label, so a nearest-mean model is informative
    inputs = (labels[:, None, None, None].float() * 30 + torch.randn(n, 1, 4, 4, generator=g) * 40).clamp(0, 255)
    split = lambda m: TensorSplit(inputs[:m].to(torch.uint8).clone(), labels[:m].clone())  # noqa: E731
    return DataBundle(
        "toy", Task(kind, c, label_values=tuple(range(c)) if kind == "ordinal" else None),
        TensorSplit(inputs.to(torch.uint8), labels), split(50), split(60), input_shape=(1, 4, 4),
        info={"source": "toy"},
    )


@pytest.fixture(scope="module")
def digits():
    return build_digits(Path("unused"))


# --------------------------------------------------------------------------- the wrapper


def test_partial_task_and_targets(digits):
    out = with_negatives(digits, fraction=0.5, strategy="random", seed=3)
    assert out.task.kind == "partial" and out.task.base_kind == "multiclass" and out.task.eval_kind == "multiclass"
    assert out.task.num_classes == 10 and out.task.class_names == digits.task.class_names
    t = out.train.targets
    assert t.shape == (len(digits.train), 2) and t.dtype == torch.int64
    n_neg = int((t[:, 1] == 0).sum())
    assert n_neg == round(0.5 * len(digits.train))
    true = digits.train.targets
    pos = t[:, 1] == 1
    assert torch.equal(t[pos, 0], true[pos])  # positives keep their label
    assert (t[~pos, 0] != true[~pos]).all()  # a negative never names the true class
    assert out.info["negatives"] == {"fraction": 0.5, "strategy": "random", "seed": 3, "count": n_neg,
                                     "train_size": len(digits.train)}
    assert out.info["sizes"] == digits.info["sizes"]


def test_val_test_and_inputs_untouched(digits):
    before = {s: (digits.split(s).inputs.clone(), digits.split(s).targets.clone()) for s in ("train", "val", "test")}
    out = with_negatives(digits, fraction=0.75, strategy="confusable", seed=0)
    assert out.val is digits.val and out.test is digits.test
    assert out.train.inputs is digits.train.inputs
    for s, (x, y) in before.items():  # the original bundle is not modified
        assert torch.equal(digits.split(s).inputs, x) and torch.equal(digits.split(s).targets, y)
    assert digits.task.kind == "multiclass"


def test_deterministic_for_a_seed(digits):
    a = with_negatives(digits, 0.5, "random", seed=1).train.targets
    b = with_negatives(digits, 0.5, "random", seed=1).train.targets
    c = with_negatives(digits, 0.5, "random", seed=2).train.targets
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("fraction,expected", [(0.0, 0), (1e-6, 1), (0.25, 100), (1.0, 400)])
def test_fraction_gives_the_count(fraction, expected):
    out = with_negatives(toy_bundle(), fraction)
    assert int((out.train.targets[:, 1] == 0).sum()) == expected


def test_random_negatives_are_uniform_over_wrong_classes():
    bundle = toy_bundle(n=14_000, c=7)
    out = with_negatives(bundle, 1.0, "random", seed=0)
    offset = (out.train.targets[:, 0] - bundle.train.targets) % 7
    counts = torch.bincount(offset, minlength=7)
    assert counts[0] == 0
    expected = 14_000 / 6
    assert ((counts[1:] - expected).abs() < 5 * math.sqrt(expected)).all(), counts  # 5 sigma


def test_confusable_on_ordinal_data_names_a_neighbour():
    bundle = toy_bundle(n=2000, c=5, kind="ordinal")
    out = with_negatives(bundle, 1.0, "confusable", seed=0)
    y, neg = bundle.train.targets, out.train.targets[:, 0]
    assert ((neg - y).abs() == 1).all()
    assert (neg[y == 0] == 1).all() and (neg[y == 4] == 3).all()
    middle = (y > 0) & (y < 4)
    up = (neg[middle] > y[middle]).float().mean().item()
    assert 0.4 < up < 0.6  # both neighbours, about equally often
    assert out.task.base_kind == "ordinal" and out.task.label_values == bundle.task.label_values


def test_confusable_on_multiclass_data_is_the_nearest_wrong_class_mean():
    bundle = toy_bundle(n=300, c=6)
    x = bundle.train.inputs.reshape(300, -1).double() / 255
    y = bundle.train.targets
    means = [x[y == k].mean(0) for k in range(6)]
    expected = []
    for i in range(300):  # loop reference
        dist = [float("inf") if k == y[i] else float(((x[i] - means[k]) ** 2).sum()) for k in range(6)]
        expected.append(min(range(6), key=dist.__getitem__))
    got, acc = nearest_mean_negatives(bundle.train.inputs, y, 6)
    assert got.tolist() == expected
    assert 0.0 < acc <= 1.0
    out = with_negatives(bundle, 1.0, "confusable")
    assert out.train.targets[:, 0].tolist() == expected
    assert out.info["negatives"]["weak_model_train_accuracy"] == pytest.approx(acc)


def test_confusable_digits_negatives_are_plausible(digits):
    conf = with_negatives(digits, 1.0, "confusable").train.targets[:, 0]
    rand = with_negatives(digits, 1.0, "random").train.targets[:, 0]
    # a confusable negative concentrates on a few wrong classes per true class
    def top_share(neg):
        joint = torch.bincount(digits.train.targets * 10 + neg, minlength=100).view(10, 10).double()
        return (joint.max(1).values.sum() / joint.sum()).item()
    assert top_share(conf) > top_share(rand) + 0.2


class DiskLike(torch.utils.data.Dataset):
    """A Dataset split (as ImageFolder gives): labels readable without the images."""

    def __init__(self, n=20, c=3):
        self.targets = torch.arange(n) % c

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), int(self.targets[i])

    def subset(self, index):
        out = DiskLike(0)
        out.targets = self.targets[index]
        return out


def test_dataset_splits_get_wrapped_and_batch_as_pairs():
    bundle = DataBundle("disk", Task("multiclass", 3), DiskLike(), DiskLike(6), DiskLike(6), input_shape=(1, 2, 2))
    out = with_negatives(bundle, 0.5, "random", seed=0)
    assert isinstance(out.train, PartialTargets) and len(out.train) == 20
    image, target = out.train[4]
    assert image[0, 0, 0].item() == 4.0 and target.shape == (2,)
    loader = EpochLoader(out.train, batch_size=8, device="cpu", mean=(0.0,), std=(1.0,))
    batch = next(iter(loader))
    assert batch.targets.shape == (8, 2) and torch.equal(batch.targets, out.train.targets[:8])
    assert len(out.train.subset(torch.tensor([1, 2]))) == 2
    with pytest.raises(SoftlossError, match="strategy=confusable needs the training images in memory"):
        with_negatives(bundle, 0.5, "confusable")


@pytest.mark.parametrize("kwargs,message", [
    ({"fraction": 1.5}, r"data.negatives.fraction must be in \[0, 1\], got 1.5"),
    ({"fraction": -0.1}, r"data.negatives.fraction must be in \[0, 1\]"),
    ({"fraction": 0.5, "strategy": "nearest"}, "data.negatives.strategy must be one of random, confusable, got 'nearest'"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(SoftlossError, match=message):
        with_negatives(toy_bundle(), **kwargs)


def test_multilabel_and_single_class_data_are_refused():
    bundle = toy_bundle()
    multilabel = DataBundle("shapes", Task("multilabel", 7), bundle.train, bundle.val, bundle.test, (1, 4, 4))
    with pytest.raises(SoftlossError, match="data.negatives needs multiclass or ordinal data; data=shapes is multilabel"):
        with_negatives(multilabel, 0.5)
    one = DataBundle("one", Task("multiclass", 1), TensorSplit(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long)),
                     bundle.val, bundle.test, (1,))
    with pytest.raises(SoftlossError, match="at least 2 classes"):
        with_negatives(one, 0.5)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", SINGLE_LABEL_CONFIGS)
def test_every_single_label_data_config_takes_a_negatives_fraction(compose_cfg, name):
    cfg = compose_cfg([f"data={name}", "data.negatives.fraction=0.5", "data.negatives.strategy=confusable"])
    assert cfg.data.negatives.fraction == 0.5 and cfg.data.negatives.strategy == "confusable"
    assert cfg.data.negatives.seed == 0


def test_build_data_applies_the_wrapper(compose_cfg, tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_cfg(["data=digits", "data.negatives.fraction=0.25", "loss=nl"])
    bundle = build_data(OmegaConf.to_container(cfg.data, resolve=True), tmp_path)
    assert bundle.task.kind == "partial"
    assert int((bundle.train.targets[:, 1] == 0).sum()) == round(0.25 * len(bundle.train))
    plain = build_data(OmegaConf.to_container(compose_cfg(["data=digits"]).data, resolve=True), tmp_path)
    assert plain.task.kind == "multiclass"


def test_negatives_experiment_composes_and_instantiates(compose_cfg):
    cfg = compose_cfg(["experiment=negatives", "seed=2"], return_hydra_config=True)
    assert cfg.data.name == "digits" and cfg.eval.checkpoint == "last"
    assert cfg.data.negatives.seed == 2  # follows the run's seed
    params = cfg.hydra.sweeper.params
    assert params["loss"] == "positives_only,nl,negated_ce"
    assert params["data.negatives.fraction"] == "0.25,0.5,0.75" and params["seed"] == "0,1,2"
    for name in ("positives_only", "nl", "negated_ce"):
        loss = instantiate(compose_cfg(["experiment=negatives", f"loss={name}"]).loss)
        assert loss.registry_name == name and loss.task_kinds == ("partial",)
    ordinal = compose_cfg(["experiment=negatives_ordinal", "seed=1"], return_hydra_config=True)
    assert ordinal.data.name == "ordinal_images" and ordinal.data.train_size == 5000
    assert ordinal.data.negatives.strategy == "confusable" and ordinal.data.negatives.seed == 1
    assert ordinal.trainer.epochs == 6 and ordinal.eval.checkpoint == "last"
    assert ordinal.trainer.grad_clip == cfg.trainer.grad_clip == 1.0
    assert dict(ordinal.hydra.sweeper.params) == dict(params)
    assert instantiate(ordinal.loss).normalize == "positives"


@pytest.mark.parametrize("name", ["nl", "negated_ce", "positives_only"])
def test_loss_configs_instantiate(compose_cfg, name):
    cfg = compose_cfg([f"loss={name}"])
    loss = instantiate(cfg.loss)
    assert loss.registry_name == name and loss.penalty_fn is None and loss.logit_scale == 1.0


# --------------------------------------------------------------------------- partial metrics


def ref_partial(scores, targets):
    viol, neg, hit, pos, prob = 0, 0, 0, 0, 0.0
    for row, (label, positive) in zip(scores.tolist(), targets.tolist()):
        pred = row.index(max(row))  # first maximal index
        if positive:
            pos += 1
            hit += pred == label
        else:
            neg += 1
            viol += pred == label
            prob += row[label] / sum(row)
    return viol / neg, prob / neg, hit / pos


def test_partial_metrics_match_loop_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 5, generator=g) * 2
    probs = torch.softmax(logits, 1)
    targets = torch.stack([torch.randint(0, 5, (500,), generator=g), torch.randint(0, 2, (500,), generator=g)], 1)
    rate, prob, acc = ref_partial(probs, targets)
    assert neg_violation_rate(probs, targets) == pytest.approx(rate)
    assert neg_violation_prob(probs, targets) == pytest.approx(prob, rel=1e-6)
    assert positive_accuracy(probs, targets) == pytest.approx(acc)
    gaps = sorted((max(r) - min(r)) for r in logits.double().tolist())
    assert logit_gap(logits) == pytest.approx(gaps[(len(gaps) - 1) // 2], rel=1e-6)  # lower median
    out = EvalOutputs(logits, targets, probs)
    got = compute_metrics(out, Task("partial", 5, base_kind="multiclass"), kind="partial")
    assert got == pytest.approx({"neg_violation_rate": rate, "neg_violation_prob": prob, "pos_accuracy": acc,
                                 "logit_gap": gaps[(len(gaps) - 1) // 2]}, rel=1e-6)


def test_partial_metric_edges():
    scores = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    # ties go to the first maximal index: row 0 predicts class 0
    targets = torch.tensor([[0, 0], [1, 0], [1, 1]])
    assert neg_violation_rate(scores, targets) == 0.5
    assert positive_accuracy(scores, targets) == 1.0
    only_pos = torch.tensor([[0, 1], [1, 1], [1, 1]])
    with pytest.raises(ValueError, match="no negative-labelled samples"):
        neg_violation_rate(scores, only_pos)
    result = negative_metrics(EvalOutputs(scores.clamp_min(1e-6).log(), only_pos, scores), Task("partial", 3, base_kind="multiclass"))
    assert set(result) == {"pos_accuracy", "logit_gap"}
    with pytest.raises(ValueError, match="no positive-labelled samples"):
        positive_accuracy(scores, torch.tensor([[0, 0], [1, 0], [1, 0]]))
    with pytest.raises(ValueError, match=r"targets must be \[N, 2\] rows"):
        neg_violation_rate(scores, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        neg_violation_rate(scores, torch.tensor([[3, 0], [1, 0], [1, 1]]))
    with pytest.raises(ValueError, match="logits must be finite"):
        logit_gap(torch.tensor([[float("inf"), 0.0]]))
    assert lower_is_better("train/neg_violation_rate") and lower_is_better("train/logit_gap")
    assert not lower_is_better("train/pos_accuracy")
