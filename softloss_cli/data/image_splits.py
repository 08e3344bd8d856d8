"""The splits of a user's image files: decoded once into memory (``ImageTensorSplit``), or
read from disk per batch (``ImageFiles``) when the decoded set would exceed
``data.cache_max_gb``. Shared by ``data=image_folder`` and ``data=manifest``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from softloss_cli.data.base import TensorSplit
from softloss_cli.data.image_cache import check_on_bad_image, decode_all
from softloss_cli.data.images import load_image
from softloss_cli.errors import SoftlossError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For one channel: the luminance of ImageNet's mean colour and the mean of its stds.
IMAGENET_GRAY_MEAN = (0.449,)
IMAGENET_GRAY_STD = (0.226,)
CACHE_FOLDER = "image_cache"  # under the data root (paths.data_root)


@dataclass
class ImageTensorSplit(TensorSplit):
    """A ``TensorSplit`` of decoded image files that remembers each row's file (``paths``),
    so predictions can be written next to the image they belong to."""

    paths: tuple[str, ...] = ()

    def subset(self, index: torch.Tensor) -> ImageTensorSplit:
        base = TensorSplit.subset(self, index)
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageTensorSplit(base.inputs, base.targets, base.posterior, base.extras,
                                tuple(self.paths[i] for i in index.tolist()))


class ImageFiles(Dataset):
    """Images on disk; item ``i`` is ``(uint8 [channels, size, size], target)``, plus a dict of
    per-sample ``extras`` as a third element when the split has any.

    ``targets``: int64 ``[N]`` (an item's target is then a Python int), ``[N, 2]`` (partial)
    or float ``[N, C]`` (multi-label); all of them readable without opening an image.
    Images are decoded by ``images.load_image``.
    """

    def __init__(self, paths: list[str], targets: torch.Tensor, image_size: int, channels: int,
                 extras: dict[str, torch.Tensor] | None = None):
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets)
        if not self.targets.is_floating_point():
            self.targets = self.targets.to(torch.int64)
        self.image_size = image_size
        self.channels = channels
        self.extras = dict(extras or {})

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = load_image(self.paths[index], self.image_size, self.channels)
        target = self.targets[index]
        target = int(target) if target.ndim == 0 else target
        if self.extras:
            return image, target, {k: v[index] for k, v in self.extras.items()}
        return image, target

    def subset(self, index: torch.Tensor) -> ImageFiles:
        """The images at ``index`` (same interface as ``TensorSplit.subset``)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return ImageFiles([self.paths[i] for i in index.tolist()], self.targets[index], self.image_size,
                          self.channels, {k: v[index] for k, v in self.extras.items()})


@dataclass
class SplitFiles:
    """One split before decoding: its files, targets and per-sample extras."""

    paths: list[str]
    targets: torch.Tensor
    extras: dict[str, torch.Tensor]

    def keep(self, mask: torch.Tensor) -> SplitFiles:
        index = mask.nonzero().squeeze(1)
        return SplitFiles([self.paths[i] for i in index.tolist()], self.targets[index],
                          {k: v[index] for k, v in self.extras.items()})


def image_splits(parts: dict[str, SplitFiles], *, image_size: int, channels: int, data_root: Path | None,
                 cache_max_gb: float, on_bad_image: str, where: Callable[[str], str] | None = None):
    """``({split: ImageTensorSplit | ImageFiles}, info)`` for ``parts``.

    Every file of every split is decoded in one pass (``image_cache.decode_all``, cached under
    ``<data_root>/image_cache``); above ``cache_max_gb`` the splits read from disk instead.
    A file that cannot be read stops here with one line (``on_bad_image=fail``, naming the
    file and, through ``where(path)``, e.g. its manifest row) or is dropped (``skip``:
    ``info['skipped_images']`` lists ``{path, reason}``). Streamed splits meet a bad file
    only when a batch reads it, and then fail.
    """
    check_on_bad_image(on_bad_image)
    if float(cache_max_gb) < 0:
        raise SoftlossError(f"data.cache_max_gb must be >= 0, got {cache_max_gb}")
    names = list(parts)
    all_paths = [p for name in names for p in parts[name].paths]
    cache_dir = Path(data_root) / CACHE_FOLDER if data_root is not None else None
    decoded = decode_all(all_paths, image_size, channels, cache_dir, max_gb=float(cache_max_gb))
    info = {"cache": decoded.source, "cache_file": decoded.path, "skipped_images": []}
    if decoded.images is None:
        splits = {name: ImageFiles(p.paths, p.targets, image_size, channels, p.extras) for name, p in parts.items()}
        return splits, info
    if decoded.bad and on_bad_image == "fail":
        first = min(decoded.bad)
        prefix = where(all_paths[first]) if where else ""
        more = f" ({len(decoded.bad) - 1} more unreadable; data.on_bad_image=skip leaves them out)" \
            if len(decoded.bad) > 1 else " (data.on_bad_image=skip leaves such files out)"
        raise SoftlossError(f"{prefix}{decoded.bad[first]}{more}")
    info["skipped_images"] = [{"path": all_paths[i], "reason": decoded.bad[i]} for i in sorted(decoded.bad)]
    good = torch.ones(len(all_paths), dtype=torch.bool)
    good[list(decoded.bad)] = False
    splits, start = {}, 0
    for name in names:
        part = parts[name]
        stop = start + len(part.paths)
        keep = good[start:stop]
        rows = torch.arange(start, stop)[keep]
        kept = part.keep(keep)
        splits[name] = ImageTensorSplit(decoded.images[rows], kept.targets, None, kept.extras, tuple(kept.paths))
        start = stop
    return splits, info


def normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean/std (so pretrained backbones see what they expect); one channel: their luma."""
    return (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD) if int(channels) == 1 else (IMAGENET_MEAN, IMAGENET_STD)
