"""The user's own images: ``<root>/<class>/<image>`` or ``<root>/{train,val,test}/<class>/<image>``.

Images stay on disk and are read by a DataLoader with workers; only the file list and the
labels are held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.torchvision_sets import stratified_split
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For one channel: the luminance of ImageNet's mean colour and the mean of its stds.
IMAGENET_GRAY_MEAN = (0.449,)
IMAGENET_GRAY_STD = (0.226,)


class ImageFiles(Dataset):
    """Images on disk with integer labels; item ``i`` is ``(uint8 [channels, size, size], label)``.

    Each image is converted to RGB (3 channels) or L (1 channel), its shorter side resized
    to ``image_size`` (bilinear, antialiased by PIL) and centre-cropped to a square.
    ``targets`` (int64 ``[N]``) gives every label without reading an image.
    """

    def __init__(self, paths: list[str], targets: torch.Tensor, image_size: int, channels: int):
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.int64)
        self.image_size = image_size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(self.paths[index], self.image_size, self.channels), int(self.targets[index])

    def subset(self, index: torch.Tensor) -> ImageFiles:
        """The images at ``index`` (same interface as ``TensorSplit.subset``)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageFiles(
            [self.paths[i] for i in index.tolist()], self.targets[index], self.image_size, self.channels
        )


def load_image(path: str, image_size: int, channels: int) -> torch.Tensor:
    """uint8 ``[channels, image_size, image_size]``: shorter side resized, then centre-cropped."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            w, h = img.size
            scale = image_size / min(w, h)
            new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            array = np.array(img, dtype=np.uint8)  # a copy: PIL buffers are read-only
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SoftlossError(f"cannot read image {path}: {reason}") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


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
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
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


def split_tree(root: Path, val_fraction: float, test_fraction: float, seed: int):
    """Class names and ``{split: (paths, targets)}`` for either layout of ``root``.

    With ``root/train``: ``val/`` and ``test/`` are used where present and otherwise
    carved from train; without it, ``root`` itself is split. Carving is stratified and
    seeded (see ``stratified_split``), so the same tree and seed always give the same split.
    """
    layout = "train/val/test" if (root / "train").is_dir() else "single folder"
    base = root / "train" if layout == "train/val/test" else root
    classes = _class_folders(base)
    if not classes:
        raise SoftlossError(
            f"data.root {root} has no class folders: expected {root}/<class>/<image> or {root}/train/<class>/<image>"
        )
    given = {"val": root / "val", "test": root / "test"} if layout == "train/val/test" else {}
    given = {name: folder for name, folder in given.items() if folder.is_dir()}
    for folder in given.values():
        _check_same_classes(folder, _class_folders(folder), classes)

    paths, targets = scan_tree(base, classes)
    if not paths:
        raise SoftlossError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {base}")
    carve = [name for name in ("val", "test") if name not in given]
    fractions = {"val": val_fraction, "test": test_fraction}
    parts = stratified_split(targets, [fractions[name] for name in carve], seed)
    splits = {"train": ([paths[i] for i in parts[0].tolist()], targets[parts[0]])}
    for name, index in zip(carve, parts[1:]):
        splits[name] = ([paths[i] for i in index.tolist()], targets[index])
    for name, folder in given.items():
        splits[name] = scan_tree(folder, classes)
    return classes, splits, layout


@DATASETS.register(
    "image_folder", "your own images: data.root=/path with <class>/<image> or train|val|test/<class>/<image>"
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
) -> DataBundle:
    """A folder of class sub-folders (``root``, relative to the current directory) read from disk.

    ``data_root`` is unused: the user's folder is ``root`` (``data.root`` on the command
    line). Class names are the sorted folder names of train. Normalisation uses ImageNet's
    mean/std (so pretrained backbones see what they expect); ``augment_ok`` is True.
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
    classes, parts, layout = split_tree(folder, float(val_fraction), float(test_fraction), int(seed))
    splits = {
        name: ImageFiles(paths, targets, int(image_size), int(channels))
        for name, (paths, targets) in parts.items()
    }
    gray = int(channels) == 1
    return DataBundle(
        name="image_folder",
        task=Task("multiclass", len(classes), class_names=tuple(classes)),
        **splits,
        input_shape=(int(channels), int(image_size), int(image_size)),
        mean=IMAGENET_GRAY_MEAN if gray else IMAGENET_MEAN,
        std=IMAGENET_GRAY_STD if gray else IMAGENET_STD,
        augment_ok=True,
        info={
            "sizes": {k: len(v) for k, v in splits.items()},
            "root": str(folder),
            "layout": layout,
            "seed": int(seed),
        },
    )
