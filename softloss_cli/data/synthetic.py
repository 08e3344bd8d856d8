"""Synthetic counting images: an ordinal, long-tailed task whose neighbouring labels are confusable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.generated import SPLITS, cached_splits, pixel_stats, split_sizes
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

#: Bump when the rendering changes, so that cached files of the old generator are not reused.
GENERATOR_VERSION = 1
BLOB_SIGMA = 1.0  # px
INTENSITY_RANGE = (0.6, 1.0)
NOISE_STD = 0.04  # on the 0..1 scale: visible grain that never hides a blob
CHUNK = 1024  # images rendered at once: bounds memory at ~30 MB of float32 per chunk


def count_distribution(num_classes: int, tail: float) -> np.ndarray:
    """``p(N) ∝ exp(-N / tail)`` for ``N = 0..num_classes-1`` (float64, sums to 1)."""
    p = np.exp(-np.arange(num_classes) / tail)
    return p / p.sum()


def render_blobs(counts: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Images with ``counts[i]`` Gaussian blobs each, as uint8 ``[N, 1, S, S]``.

    Blobs have sigma ``BLOB_SIGMA``, a peak drawn from ``INTENSITY_RANGE`` and a centre drawn
    uniformly at least 2 sigma from the border (so every blob is visibly inside); they may
    overlap and are combined by max, which is what makes neighbouring counts confusable.
    Gaussian noise of ``NOISE_STD`` is added before quantisation. Every blob of a chunk is
    rendered as one full image (separable Gaussian: an outer product), then the blobs of
    each image are max-reduced with ``np.maximum.reduceat``: no Python loop over samples.
    """
    counts = np.asarray(counts, dtype=np.int64)
    out = np.empty((len(counts), 1, image_size, image_size), dtype=np.uint8)
    for start in range(0, len(counts), CHUNK):
        out[start : start + CHUNK, 0] = _render_chunk(counts[start : start + CHUNK], image_size, rng)
    return out


def _render_chunk(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n_blobs = int(counts.sum())
    margin = 2 * BLOB_SIGMA
    centres = rng.uniform(margin, size - 1 - margin, size=(n_blobs, 2)).astype(np.float32)
    peaks = rng.uniform(*INTENSITY_RANGE, size=n_blobs).astype(np.float32)
    noise = rng.standard_normal(size=(len(counts), size, size), dtype=np.float32) * NOISE_STD

    grid = np.arange(size, dtype=np.float32)
    gy = np.exp(-((grid - centres[:, :1]) ** 2) / (2 * BLOB_SIGMA**2)) * peaks[:, None]
    gx = np.exp(-((grid - centres[:, 1:]) ** 2) / (2 * BLOB_SIGMA**2))
    blobs = gy[:, :, None] * gx[:, None, :]  # [n_blobs, S, S]

    images = np.zeros((len(counts), size, size), dtype=np.float32)
    has_blobs = counts > 0
    if n_blobs:
        # Blobs are laid out image by image, so each image's blobs start at the running count.
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[has_blobs]
        images[has_blobs] = np.maximum.reduceat(blobs, starts, axis=0)
    images += noise
    return np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def generate_ordinal_images(
    sizes: dict[str, int], image_size: int, num_classes: int, tail: float, seed: int
) -> dict[str, np.ndarray]:
    """Labels and images of every split, as ``{"<split>_x": uint8 [N,1,S,S], "<split>_y": int64 [N]}``.

    Each split draws from its own child of ``SeedSequence(seed)``, so changing one split's
    size leaves the other splits unchanged.
    """
    p = count_distribution(num_classes, tail)
    arrays = {}
    for split, seq in zip(SPLITS, np.random.SeedSequence(seed).spawn(len(SPLITS))):
        rng = np.random.default_rng(seq)
        labels = rng.choice(num_classes, size=sizes[split], p=p).astype(np.int64)
        arrays[f"{split}_x"] = render_blobs(labels, image_size, rng)
        arrays[f"{split}_y"] = labels
    return arrays


def _check_params(sizes: dict[str, int], image_size: int, num_classes: int, tail: float) -> None:
    for split, n in sizes.items():
        if n < 0 or (split == "train" and n == 0):
            raise SoftlossError(f"data.{split}_size must be {'> 0' if split == 'train' else '>= 0'}, got {n}")
    if num_classes < 2:
        raise SoftlossError(f"data.num_classes must be >= 2 for an ordinal task, got {num_classes}")
    if image_size < 8:
        raise SoftlossError(f"data.image_size must be >= 8 pixels, got {image_size}")
    if not tail > 0:
        raise SoftlossError(f"data.tail must be > 0 (larger = flatter label distribution), got {tail}")


@DATASETS.register(
    "ordinal_images", "synthetic 32x32 counting images: label = number of blobs (ordinal, long-tailed)"
)
def build_ordinal_images(
    data_root: Path,
    *,
    train_size: int = 20000,
    val_size: int = 5000,
    test_size: int = 5000,
    image_size: int = 32,
    num_classes: int = 30,
    tail: float = 7.0,
    seed: int = 0,
) -> DataBundle:
    """Grayscale images holding ``N = 0..num_classes-1`` blobs, label ``N``, ``p(N) ∝ exp(-N/tail)``.

    Generated once per parameter set and cached under ``data_root`` (see ``cache.py``).
    ``augment_ok`` is False: a random crop can cut a blob out and change the count.
    Mean/std are measured on the train split (0..1 scale).
    """
    sizes = split_sizes(train_size, val_size, test_size)
    image_size, num_classes, tail, seed = int(image_size), int(num_classes), float(tail), int(seed)
    _check_params(sizes, image_size, num_classes, tail)
    # Normalised types first, so that data.tail=7 and data.tail=7.0 share one cache file.
    params = dict(image_size=image_size, num_classes=num_classes, tail=tail, seed=seed)
    generate = lambda: generate_ordinal_images(sizes, image_size, num_classes, tail, seed)  # noqa: E731
    splits, _ = cached_splits(data_root, "ordinal_images", GENERATOR_VERSION, sizes, params, generate)
    mean, std = pixel_stats(splits["train"], per_channel=False)
    counts = {s: torch.bincount(splits[s].targets, minlength=num_classes).tolist() for s in SPLITS}
    return DataBundle(
        name="ordinal_images",
        task=Task("ordinal", num_classes, label_values=tuple(range(num_classes))),
        **splits,
        input_shape=(1, image_size, image_size),
        mean=mean,
        std=std,
        augment_ok=False,
        info={
            "sizes": sizes,
            "class_counts": counts,
            "tail": tail,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
    )
