"""The negatives wrapper: turn part of a training split into "the answer is not l" labels.

``with_negatives(bundle, fraction, strategy, seed)`` picks ``round(fraction * N)`` training
samples at random; each loses its positive label and gets one negative label instead.
The result is a ``partial`` task (tasks.py): train targets int64 ``[N, 2]`` =
``(label, is_positive)``; val and test keep their true labels (``task.base_kind``).

``build_data`` calls it when ``data.negatives.fraction > 0``; every multiclass or ordinal
data config has a ``negatives: {fraction: 0.0, strategy: random, seed: 0}`` block, so
``data.negatives.fraction=0.5`` works on the command line.

Strategies (which wrong class a negative names):
    random      uniform over the C - 1 wrong classes.
    confusable  a plausible wrong class, as a person correcting a model's mistake would
                give: for ordinal data a neighbouring class (y - 1 or y + 1, at random,
                inside the range); for multiclass data the best wrong guess of a weak model,
                a nearest-class-mean classifier fitted on the training pixels (the wrong
                class whose mean image is closest).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from softloss_cli.data.base import DataBundle, TensorSplit
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

STRATEGIES = ("random", "confusable")
CHUNK = 4096  # samples per step of the nearest-mean classifier (bounds memory on large sets)


class PartialTargets(Dataset):
    """A training ``Dataset`` (data read from disk) with partial targets: item i is
    ``(image, targets[i])``, ``targets[i]`` an int64 ``[2]`` tensor (the loader stacks them)."""

    def __init__(self, base: Dataset, targets: torch.Tensor):
        if len(base) != len(targets):
            raise ValueError(f"{len(base)} samples but {len(targets)} targets")
        self.base, self.targets = base, targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, _ = self.base[index]
        return image, self.targets[index]

    def subset(self, index: torch.Tensor) -> PartialTargets:
        return PartialTargets(self.base.subset(index), self.targets[index])


def _labels(split) -> torch.Tensor:
    if isinstance(split, TensorSplit):
        return split.targets.long()
    targets = getattr(split, "targets", None)
    if targets is None:
        raise SoftlossError("data.negatives needs a training set whose labels can be read without its images")
    return torch.as_tensor(targets, dtype=torch.int64)


def random_negatives(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random wrong class per label: ``(y + U{1..C-1}) mod C``."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offset) % num_classes


def neighbour_negatives(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """An adjacent class per ordinal label: ``y - 1`` or ``y + 1`` with probability 1/2 each,
    the only neighbour at either end of the range."""
    step = torch.randint(0, 2, labels.shape, generator=generator) * 2 - 1
    step = torch.where(labels == 0, 1, torch.where(labels == num_classes - 1, -1, step))
    return labels + step


def nearest_mean_negatives(inputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, float]:
    """The closest wrong class mean for every sample, and the weak model's accuracy.

    Fits class means of the flattened inputs (scaled to 0..1 for uint8) on all of them,
    then takes ``argmin_{c != y} ||x - mu_c||^2`` (vectorised per chunk of ``CHUNK``
    samples). Deterministic: no randomness. Returns ``(negatives int64 [N], accuracy)``.
    """
    n = len(labels)
    flat = inputs.reshape(n, -1)
    scale = 1 / 255 if flat.dtype == torch.uint8 else 1.0
    sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64)
    for start in range(0, n, CHUNK):
        sums.index_add_(0, labels[start : start + CHUNK], flat[start : start + CHUNK].double() * scale)
    means = (sums / torch.bincount(labels, minlength=num_classes).clamp_min(1)[:, None]).float()
    sq_means = means.square().sum(dim=1)
    negatives, correct = torch.empty(n, dtype=torch.int64), 0
    for start in range(0, n, CHUNK):
        x = flat[start : start + CHUNK].float() * scale
        y = labels[start : start + CHUNK]
        dist = sq_means[None, :] - 2 * x @ means.T  # ||x||^2 is the same for every class
        correct += int((dist.argmin(dim=1) == y).sum())
        negatives[start : start + CHUNK] = dist.scatter(1, y[:, None], float("inf")).argmin(dim=1)
    return negatives, correct / max(n, 1)


def with_negatives(bundle: DataBundle, fraction: float, strategy: str = "random", seed: int = 0) -> DataBundle:
    """``bundle`` with ``round(fraction * N)`` training samples relabelled as negatives.

    Args:
        bundle: a multiclass or ordinal dataset (C >= 2).
        fraction: share of training samples in [0, 1] that get a negative label instead of
            their positive one (at least one sample when ``fraction > 0``).
        strategy: ``random`` | ``confusable`` (see the module docstring).
        seed: chooses the samples and the random wrong classes (independent of the training
            seed and of the data's own seed). The same arguments give the same targets.

    Returns a new ``DataBundle`` whose task is ``Task(kind='partial', base_kind=<original
    kind>, ...)`` and whose train split holds ``[N, 2]`` targets; inputs, val and test are the
    original objects. ``info['negatives']`` records the counts (and the weak model's
    training accuracy for ``confusable`` on multiclass data).
    """
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise SoftlossError(f"data.negatives.fraction must be in [0, 1], got {fraction}")
    if strategy not in STRATEGIES:
        raise SoftlossError(f"data.negatives.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    task = bundle.task
    if task.kind not in ("multiclass", "ordinal"):
        raise SoftlossError(
            f"data.negatives needs multiclass or ordinal data; data={bundle.name} is {task.kind}"
        )
    c = task.num_classes
    if c < 2:
        raise SoftlossError(f"data.negatives needs at least 2 classes; data={bundle.name} has {c}")

    train = bundle.train
    labels = _labels(train)
    n = len(labels)
    generator = torch.Generator().manual_seed(int(seed))
    n_neg = min(n, max(1, round(fraction * n))) if fraction > 0 else 0
    chosen = torch.randperm(n, generator=generator)[:n_neg]
    info = {"fraction": fraction, "strategy": strategy, "seed": int(seed), "count": n_neg, "train_size": n}

    if strategy == "random":
        negative = random_negatives(labels[chosen], c, generator)
    elif task.kind == "ordinal":
        negative = neighbour_negatives(labels[chosen], c, generator)
    else:
        if not isinstance(train, TensorSplit):
            raise SoftlossError(
                f"data.negatives.strategy=confusable needs the training images in memory (its weak model reads "
                f"them all); data={bundle.name} is read from disk: use data.negatives.strategy=random"
            )
        weak, weak_acc = nearest_mean_negatives(train.inputs, labels, c)
        negative = weak[chosen]
        info["weak_model_train_accuracy"] = weak_acc

    targets = torch.stack([labels, torch.ones_like(labels)], dim=1)
    targets[chosen, 0] = negative
    targets[chosen, 1] = 0
    if isinstance(train, TensorSplit):
        new_train = TensorSplit(train.inputs, targets, train.posterior, dict(train.extras))
    else:
        new_train = PartialTargets(train, targets)
    partial = Task(
        "partial", c, class_names=task.class_names, label_values=task.label_values, base_kind=task.kind,
        has_posterior=task.has_posterior, extras=dict(task.extras),
    )
    return dataclasses.replace(bundle, task=partial, train=new_train, info={**bundle.info, "negatives": info})
