"""Datasets: builders registered by name, the negatives wrapper, and the loaders.

``build_data(cfg, data_root)`` takes the ``data`` config group (a flat mapping: the
builder's own parameters plus the loader keys below), builds the dataset (generating
and caching synthetic data under ``data_root``) and checks its labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from softloss_cli.data.base import DATASETS, DataBundle, TensorSplit, check_targets
from softloss_cli.errors import SoftlossError
from softloss_cli.registry import import_families

#: keys of a data config read by the loaders, not passed to the builder.
LOADER_KEYS = ("name", "batch_size", "eval_batch_size", "num_workers", "augment", "negatives")

# Builder modules register their datasets on import.
import_families("softloss_cli.data", ("synthetic", "digits", "torchvision_sets", "image_folder", "manifest", "routing",
                                      "multilabel_shapes", "ambiguous"))


def builder_params(cfg: Mapping) -> dict:
    """The builder's own parameters: the data config minus the loader keys."""
    return {k: v for k, v in cfg.items() if k not in LOADER_KEYS}


def build_data(cfg: Mapping, data_root: str | Path) -> DataBundle:
    """Build the dataset named ``cfg['name']``, apply the negatives wrapper, check labels."""
    builder = DATASETS.get(cfg["name"])
    bundle = with_train_class_counts(builder(Path(data_root), **builder_params(cfg)))
    negatives = cfg.get("negatives") or {}
    if negatives and float(negatives.get("fraction", 0.0)) > 0:
        from softloss_cli.data.negatives import with_negatives

        bundle = with_negatives(bundle, **dict(negatives))
    for split_name in ("train", "val", "test"):
        split = bundle.split(split_name)
        if len(split) == 0:
            raise SoftlossError(f"data={cfg['name']} has an empty {split_name} split; check its size or fraction settings")
        targets = split.targets if isinstance(split, TensorSplit) else getattr(split, "targets", None)
        if targets is not None:
            import torch

            check_targets(bundle.task, split_name, torch.as_tensor(targets))
    return bundle


def with_train_class_counts(bundle: DataBundle) -> DataBundle:
    """``task.extras['train_class_counts']`` (``[C]`` int64) from the training labels of a
    multiclass dataset whose builder did not set them (ImageFolder, torchvision sets, digits).

    The Average-K metrics and figures bucket classes into head/medium/tail by these counts;
    without them each would fall back to the labels of the split it was given (validation for
    the metrics, test for the figure) and the two could disagree on a class's bucket.
    """
    import dataclasses

    import torch

    task = bundle.task
    if task.kind != "multiclass" or "train_class_counts" in (task.extras or {}):
        return bundle
    targets = getattr(bundle.train, "targets", None)
    if targets is None:
        return bundle
    targets = torch.as_tensor(targets)
    if targets.ndim != 1 or targets.is_floating_point():
        return bundle
    counts = torch.bincount(targets.to(torch.int64).clamp(0, task.num_classes - 1), minlength=task.num_classes)
    extras = {**(task.extras or {}), "train_class_counts": counts.tolist()}
    return dataclasses.replace(bundle, task=dataclasses.replace(task, extras=extras))


__all__ = ["DATASETS", "DataBundle", "TensorSplit", "build_data", "builder_params", "LOADER_KEYS"]
