"""The user's own images: ``<root>/<class>/<image>`` or ``<root>/{train,val,test}/<class>/<image>``.

Class folders named by numbers (``0 .. 29``) make an ordinal task in numeric order with
those numbers as label values (``data.task``, ``data.classes``: see ``labels.py``). Every
image is decoded once into a uint8 cache under the data root and trained from memory
(``image_splits.py``); above ``data.cache_max_gb`` the files are read from disk per batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.image_splits import ImageFiles, SplitFiles, image_splits, normalisation
from softloss_cli.data.images import IMAGE_EXTENSIONS, is_image_file, load_image
from softloss_cli.data.labels import resolve_label_order
from softloss_cli.data.torchvision_sets import stratified_split
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

__all__ = ["ImageFiles", "build_image_folder", "load_image", "scan_tree", "split_tree", "IMAGE_EXTENSIONS"]


def _class_folders(folder: Path) -> list[str]:
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_tree(folder: Path, classes: list[str]) -> tuple[list[str], torch.Tensor]:
    """Sorted image paths under ``folder/<class>/`` (any depth) and their class indices."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, files in os.walk(folder / name, followlinks=True)
            for f in files
            if is_image_file(f)
        )
        paths += found
        labels += [label] * len(found)
    return paths, torch.tensor(labels, dtype=torch.int64)


def _check_same_classes(split: Path, classes: list[str], train_classes: list[str]) -> None:
    if classes != train_classes:
        missing = sorted(set(train_classes) - set(classes))
        extra = sorted(set(classes) - set(train_classes))
        diff = "; ".join(
            f"{what}: {', '.join(names)}" for what, names in (("missing", missing), ("extra", extra)) if names
        )
        raise SoftlossError(f"{split} must hold the same class folders as its train/ ({diff})")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SoftlossError(
            f"data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )


def split_tree(root: Path, val_fraction: float, test_fraction: float, seed: int, task: str = "auto",
               classes=None):
    """The label order (``labels.LabelOrder``), ``{split: (paths, targets)}`` and the layout of ``root``.

    With ``root/train``: ``val/`` and ``test/`` are used where present and otherwise
    carved from train; without it, ``root`` itself is split. Carving is stratified and
    seeded (see ``stratified_split``), so the same tree and seed always give the same split.
    """
    layout = "train/val/test" if (root / "train").is_dir() else "single folder"
    base = root / "train" if layout == "train/val/test" else root
    found = _class_folders(base)
    if not found:
        raise SoftlossError(
            f"data.root {root} has no class folders: expected {root}/<class>/<image> or {root}/train/<class>/<image>"
        )
    order = resolve_label_order(found, task, classes, where=f"data.root {base}")
    given = {"val": root / "val", "test": root / "test"} if layout == "train/val/test" else {}
    given = {name: folder for name, folder in given.items() if folder.is_dir()}
    for folder in given.values():
        _check_same_classes(folder, _class_folders(folder), found)

    paths, targets = scan_tree(base, list(order.classes))
    if not paths:
        raise SoftlossError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {base}")
    carve = [name for name in ("val", "test") if name not in given]
    fractions = {"val": val_fraction, "test": test_fraction}
    parts = stratified_split(targets, [fractions[name] for name in carve], seed)
    splits = {"train": ([paths[i] for i in parts[0].tolist()], targets[parts[0]])}
    for name, index in zip(carve, parts[1:]):
        splits[name] = ([paths[i] for i in index.tolist()], targets[index])
    for name, folder in given.items():
        splits[name] = scan_tree(folder, list(order.classes))
    return order, splits, layout


@DATASETS.register(
    "image_folder", "your own images: data.root=/path with <class>/<image> or train|val|test/<class>/<image>; "
    "numeric class folders = ordinal"
)
def build_image_folder(
    data_root: Path,
    *,
    root: str | None = None,
    image_size: int = 64,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    channels: int = 3,
    task: str = "auto",
    classes=None,
    cache_max_gb: float = 8.0,
    on_bad_image: str = "fail",
) -> DataBundle:
    """A folder of class sub-folders (``root``, relative to the current directory).

    Class names and order, task kind and label values: ``labels.resolve_label_order`` of the
    folder names of train (``task``, ``classes``). Images are decoded once into a cache under
    ``data_root`` and held in memory (``image_splits``); ``on_bad_image`` fail | skip.
    Normalisation uses ImageNet's mean/std; ``augment_ok`` is True.
    """
    if root is None or str(root).strip() == "":
        raise SoftlossError("data=image_folder needs data.root=/path/to/folder")
    folder = Path(os.path.expanduser(str(root)))
    if not folder.is_dir():
        raise SoftlossError(
            f"data.root {folder} does not exist: pass a folder holding <class>/<image> or train/<class>/<image>"
        )
    if int(channels) not in (1, 3):
        raise SoftlossError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if int(image_size) < 1:
        raise SoftlossError(f"data.image_size must be >= 1, got {image_size}")
    _check_fractions(float(val_fraction), float(test_fraction))
    order, parts, layout = split_tree(folder, float(val_fraction), float(test_fraction), int(seed), task, classes)
    files = {name: SplitFiles(paths, targets, {}) for name, (paths, targets) in parts.items()}
    splits, cache_info = image_splits(files, image_size=int(image_size), channels=int(channels), data_root=data_root,
                                      cache_max_gb=cache_max_gb, on_bad_image=on_bad_image)
    mean, std = normalisation(int(channels))
    return DataBundle(
        name="image_folder",
        task=Task(order.kind, len(order.classes), class_names=order.classes, label_values=order.values,
                  extras={"class_order": order.order, "labels": order.describe()}),
        **splits,
        input_shape=(int(channels), int(image_size), int(image_size)),
        mean=mean,
        std=std,
        augment_ok=True,
        info={
            "sizes": {k: len(v) for k, v in splits.items()},
            "root": str(folder),
            "layout": layout,
            "seed": int(seed),
            **cache_info,
        },
    )
