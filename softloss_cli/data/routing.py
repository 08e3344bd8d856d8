"""Synthetic routing images: E visual families, each with its own label mapping.

The data of the "confidence" scenario (DESIGN.md): every image shows a glyph (one of C
fixed 5x5 binary patterns) on a background grating whose orientation says the image's
family (one of E). The label is ``maps[family, glyph]``, a per-family permutation of the
glyphs, built so that the same glyph has a different label in every family: neither the
glyph nor the family alone tells the label (each leaves E equally likely labels), both
together always do. A router that sends each family to its own expert makes every
expert's job a plain glyph classification, so a decisive gate is learnable (the family is
plainly visible) and useful (one expert cannot serve two families without seeing the
family too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.generated import SPLITS, cached_splits, pixel_stats, split_sizes
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

#: Bump when the rendering changes, so that cached files of the old generator are not reused.
GENERATOR_VERSION = 1
GLYPH_SIZE = 5  # cells per side of a glyph
GLYPH_SEED = 1_234_567  # the glyph alphabet is fixed: the same for every data seed
MIN_GLYPH_DISTANCE = 6  # cells in which any two glyphs differ (Hamming distance)
BACKGROUND_LEVEL = 0.3  # mean of the grating, 0..1 scale
BACKGROUND_AMPLITUDE = (0.12, 0.22)
GLYPH_INTENSITY = (0.75, 1.0)
NOISE_STD = 0.05
PERIOD_32PX = (5.0, 7.0)  # grating period in pixels at 32 px (scaled with the image size)
CHUNK = 2048  # images rendered at once (bounds memory at ~10 MB of float32 per chunk at 32 px)


def make_glyphs(num_classes: int) -> np.ndarray:
    """``num_classes`` binary ``5x5`` glyphs, pairwise at Hamming distance >= 6: bool ``[C, 5, 5]``.

    Drawn greedily from a fixed generator (``GLYPH_SEED``), so the alphabet depends only on
    ``num_classes``. Each glyph lights 9..16 of its 25 cells, with at least one lit cell on
    every border row and column, so that its extent (and its placement) is the full 5x5 box.
    """
    rng = np.random.default_rng(GLYPH_SEED)
    glyphs: list[np.ndarray] = []
    for _ in range(200_000):
        g = rng.random((GLYPH_SIZE, GLYPH_SIZE)) < 0.5
        if not 9 <= g.sum() <= 16 or not (g[0].any() and g[-1].any() and g[:, 0].any() and g[:, -1].any()):
            continue
        if all((g != h).sum() >= MIN_GLYPH_DISTANCE for h in glyphs):
            glyphs.append(g)
            if len(glyphs) == num_classes:
                return np.stack(glyphs)
    raise SoftlossError(f"could not draw {num_classes} distinct glyphs; use data.num_classes <= 64")


def family_label_maps(num_families: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``maps[f, k]``: the label of glyph k in family f, int64 ``[E, C]``.

    ``maps[f, k] = pi[(rho[k] + f) % C]`` with random permutations ``pi`` and ``rho``: every
    row is a permutation (each family uses every label once) and every column holds E
    different labels (a glyph never keeps its label across families), a Latin rectangle.
    """
    pi, rho = rng.permutation(num_classes), rng.permutation(num_classes)
    return pi[(rho[None, :] + np.arange(num_families)[:, None]) % num_classes].astype(np.int64)


def render_routing(
    families: np.ndarray,
    glyph_ids: np.ndarray,
    glyphs: np.ndarray,
    num_families: int,
    image_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """uint8 ``[N, 1, S, S]`` images: a family grating with a glyph on top, plus noise.

    Family f's grating runs at angle ``pi * f / E`` (jittered by up to a sixth of the gap
    between families, so families never overlap), with a random period, phase and
    amplitude; the glyph ``glyphs[glyph_ids[i]]``, upscaled to ``5 * max(1, S // 16)`` px,
    sits at a uniform random position at least 1 px from every border, its lit cells set
    to a random intensity. Vectorised per chunk of images.
    """
    out = np.empty((len(families), 1, image_size, image_size), dtype=np.uint8)
    for start in range(0, len(families), CHUNK):
        stop = start + CHUNK
        out[start:stop, 0] = _render_chunk(families[start:stop], glyph_ids[start:stop], glyphs,
                                           num_families, image_size, rng)
    return out


def _render_chunk(families, glyph_ids, glyphs, num_families, size, rng) -> np.ndarray:
    n = len(families)
    gap = np.pi / num_families
    angle = families * gap + rng.uniform(-gap / 6, gap / 6, size=n)
    scale = size / 32
    period = rng.uniform(*PERIOD_32PX, size=n) * scale
    phase = rng.uniform(0, 2 * np.pi, size=n)
    amplitude = rng.uniform(*BACKGROUND_AMPLITUDE, size=n)
    grid = np.arange(size, dtype=np.float32)
    # Distance along each image's grating direction: x cos(a) + y sin(a), [n, S, S].
    along = (np.cos(angle)[:, None, None] * grid[None, None, :] + np.sin(angle)[:, None, None] * grid[None, :, None])
    images = BACKGROUND_LEVEL + amplitude[:, None, None] * np.sin(
        2 * np.pi * along / period[:, None, None] + phase[:, None, None]
    )

    cell = max(1, size // 16)
    side = GLYPH_SIZE * cell
    masks = np.repeat(np.repeat(glyphs[glyph_ids], cell, axis=1), cell, axis=2)  # [n, side, side]
    last = size - side - 1  # last top/left position that keeps a 1 px margin
    top, left = (rng.integers(1, last, size=(2, n), endpoint=True) if last >= 1 else np.zeros((2, n), dtype=np.int64))
    offsets = np.arange(side)
    rows = (top[:, None] + offsets)[:, :, None]  # [n, side, 1]
    cols = (left[:, None] + offsets)[:, None, :]  # [n, 1, side]
    index = np.arange(n)[:, None, None]
    intensity = rng.uniform(*GLYPH_INTENSITY, size=n).astype(np.float32)
    patch = images[index, rows, cols]
    images[index, rows, cols] = np.where(masks, intensity[:, None, None], patch)
    images += rng.standard_normal(size=images.shape, dtype=np.float32) * NOISE_STD
    return np.rint(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def generate_routing_images(
    sizes: dict[str, int], image_size: int, num_families: int, num_classes: int, seed: int
) -> dict[str, np.ndarray]:
    """``{"maps": [E, C]}`` and per split ``<split>_x`` (uint8 ``[N,1,S,S]``), ``<split>_y``
    (int64 labels) and ``<split>_family`` (int64). Families and glyphs are uniform; each split
    draws from its own child of ``SeedSequence(seed)`` (the maps from one more)."""
    seqs = np.random.SeedSequence(seed).spawn(len(SPLITS) + 1)
    maps = family_label_maps(num_families, num_classes, np.random.default_rng(seqs[-1]))
    glyphs = make_glyphs(num_classes)
    arrays = {"maps": maps}
    for split, seq in zip(SPLITS, seqs):
        rng = np.random.default_rng(seq)
        families = rng.integers(0, num_families, size=sizes[split])
        glyph_ids = rng.integers(0, num_classes, size=sizes[split])
        arrays[f"{split}_x"] = render_routing(families, glyph_ids, glyphs, num_families, image_size, rng)
        arrays[f"{split}_y"] = maps[families, glyph_ids]
        arrays[f"{split}_family"] = families.astype(np.int64)
    return arrays


def _check_params(sizes: dict[str, int], image_size: int, num_families: int, num_classes: int) -> None:
    for split, n in sizes.items():
        if n < 0 or (split == "train" and n == 0):
            raise SoftlossError(f"data.{split}_size must be {'> 0' if split == 'train' else '>= 0'}, got {n}")
    if num_families < 1:
        raise SoftlossError(f"data.num_families must be >= 1, got {num_families}")
    if not 2 <= num_classes <= 64:
        raise SoftlossError(f"data.num_classes must be in [2, 64], got {num_classes}")
    if num_families > num_classes:
        raise SoftlossError(
            f"data.num_families={num_families} must be <= data.num_classes={num_classes}: "
            "each glyph needs a different label in every family"
        )
    if image_size < 8:
        raise SoftlossError(f"data.image_size must be >= 8 pixels, got {image_size}")


@DATASETS.register(
    "routing_images", "synthetic 16x16 glyphs on E family gratings; label = per-family mapping of the glyph"
)
def build_routing_images(
    data_root: Path,
    *,
    train_size: int = 8000,
    val_size: int = 2000,
    test_size: int = 2000,
    image_size: int = 16,
    num_families: int = 4,
    num_classes: int = 8,
    seed: int = 0,
) -> DataBundle:
    """Routing images (see the module docstring), generated once per parameter set and cached.

    Every split carries ``extras['family']`` (int64 ``[N]``, the true family), which the
    routed-model metrics use for ``route_purity``; ``task.extras['num_families']`` gives E.
    ``augment_ok`` is False: a flip would mirror the glyphs and the grating angle.
    The default 16 px keeps a run fast on a CPU (a 5 px glyph, gratings of 2.5-3.5 px
    period); 32 px doubles the glyph and the period.
    """
    sizes = split_sizes(train_size, val_size, test_size)
    image_size, num_families, num_classes, seed = int(image_size), int(num_families), int(num_classes), int(seed)
    _check_params(sizes, image_size, num_families, num_classes)
    params = dict(image_size=image_size, num_families=num_families, num_classes=num_classes, seed=seed)
    generate = lambda: generate_routing_images(sizes, image_size, num_families, num_classes, seed)  # noqa: E731
    splits, arrays = cached_splits(data_root, "routing_images", GENERATOR_VERSION, sizes, params, generate,
                                   extras=("family",))
    mean, std = pixel_stats(splits["train"], per_channel=False)
    return DataBundle(
        name="routing_images",
        task=Task("multiclass", num_classes, extras={"num_families": num_families}),
        **splits,
        input_shape=(1, image_size, image_size),
        mean=mean,
        std=std,
        augment_ok=False,
        info={
            "sizes": sizes,
            "num_families": num_families,
            "label_maps": arrays["maps"].tolist(),
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
    )
