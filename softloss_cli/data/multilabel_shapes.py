"""Synthetic colour shapes for the presence scenario (multilabel), and the shape renderer
that ``ambiguous.py`` shares.

An image holds 0 to ``max_objects`` objects of C = 10 *labelled* categories, each a
(shape, colour) pair, plus 0 to ``max_distractors`` objects of 10 *distractor* categories
that are never labelled. The two sets use the same shapes and the same colours: a red
square is labelled, a red circle and a blue square are not, so a model must learn the
conjunction and ignore the rest. About ``empty_fraction`` of the images hold no labelled
object (they may still hold distractors): softmax cannot say "none", sigmoids can.
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
CHUNK = 2048  # images rendered at once: bounds memory at ~25 MB of float32 per chunk at 32x32

SHAPES = ("square", "circle", "triangle", "cross", "ring", "diamond")
#: name -> RGB on the 0..255 scale; chosen far apart so that hue alone identifies a colour.
COLOURS = {
    "red": (220, 45, 45),
    "green": (45, 185, 60),
    "blue": (60, 90, 235),
    "yellow": (230, 215, 50),
    "magenta": (215, 60, 205),
    "cyan": (55, 205, 215),
    "orange": (245, 140, 25),
    "white": (235, 235, 235),
}
COLOUR_NAMES = tuple(COLOURS)
COLOUR_JITTER = 18.0  # per channel, uniform +-: colours vary but never cross into a neighbour
PIXEL_NOISE = 8.0  # Gaussian noise std on the 0..255 scale, on background and objects alike
BACKGROUND_RANGE = (15.0, 55.0)  # per-image dark grey level

#: multilabel_shapes uses the first 5 shapes and 4 colours; a pair (s, c) is labelled when
#: s + c is even: every shape and every colour appears in both labelled and distractor pairs.
ML_SHAPES, ML_COLOURS = 5, 4
PAIRS = [(s, c) for s in range(ML_SHAPES) for c in range(ML_COLOURS)]
LABELLED = [p for p in PAIRS if (p[0] + p[1]) % 2 == 0]
DISTRACTORS = [p for p in PAIRS if (p[0] + p[1]) % 2 == 1]
CATEGORY_NAMES = tuple(f"{COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in LABELLED)
GRID = 3  # objects sit in distinct cells of a 3x3 grid, so they never overlap or hide each other


def shape_masks(shape: np.ndarray, cy: np.ndarray, cx: np.ndarray, radius: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks ``[M, S, S]`` of M objects (shape index into ``SHAPES``, centre, radius in px).

    Pixel (y, x) is covered when its centre lies inside the shape; each shape is a closed-form
    test on the offsets (no rasteriser), computed per shape for all objects of that shape.
    """
    grid = np.arange(size, dtype=np.float32)
    dy = grid[None, :, None] - cy[:, None, None].astype(np.float32)
    dx = grid[None, None, :] - cx[:, None, None].astype(np.float32)
    r = radius[:, None, None].astype(np.float32)
    ady, adx = np.abs(dy), np.abs(dx)
    dist2 = dy**2 + dx**2
    masks = np.zeros((len(shape), size, size), dtype=bool)
    tests = {
        0: lambda i: np.maximum(ady[i], adx[i]) <= 0.85 * r[i],  # square (area close to the circle's)
        1: lambda i: dist2[i] <= r[i] ** 2,  # circle
        2: lambda i: (dy[i] >= -r[i]) & (dy[i] <= 0.8 * r[i]) & (adx[i] <= 0.6 * (dy[i] + r[i])),  # triangle, apex up
        3: lambda i: ((adx[i] <= 0.35 * r[i]) & (ady[i] <= r[i])) | ((ady[i] <= 0.35 * r[i]) & (adx[i] <= r[i])),  # plus
        4: lambda i: (dist2[i] <= r[i] ** 2) & (dist2[i] >= (0.5 * r[i]) ** 2),  # ring
        5: lambda i: adx[i] + ady[i] <= 1.1 * r[i],  # diamond
    }
    for s, test in tests.items():
        idx = np.flatnonzero(shape == s)
        if len(idx):
            masks[idx] = test(idx)
    return masks


def render_objects(
    shape: np.ndarray, colour: np.ndarray, cy: np.ndarray, cx: np.ndarray, radius: np.ndarray,
    size: int, rng: np.random.Generator,
) -> np.ndarray:
    """uint8 images ``[N, 3, S, S]`` holding up to M objects each.

    ``shape``/``colour``: int ``[N, M]`` (shape -1 marks an empty slot); ``cy, cx, radius``:
    float ``[N, M]`` in pixels. Background: a per-image grey level plus Gaussian pixel noise;
    each object is painted in its colour with a per-object jitter, later slots on top (the
    callers place objects so they do not overlap). Loops run over slots and chunks only.
    """
    n, m = shape.shape
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    palette = np.asarray(list(COLOURS.values()), dtype=np.float32)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        k = sl.stop - sl.start
        level = rng.uniform(*BACKGROUND_RANGE, size=(k, 1, 1, 1)).astype(np.float32)
        img = np.broadcast_to(level, (k, 3, size, size)).copy()
        for j in range(m):
            present = np.flatnonzero(shape[sl, j] >= 0)
            if not len(present):
                continue
            rgb = palette[colour[sl, j][present]] + rng.uniform(
                -COLOUR_JITTER, COLOUR_JITTER, size=(len(present), 3)
            ).astype(np.float32)
            masks = shape_masks(shape[sl, j][present], cy[sl, j][present], cx[sl, j][present],
                                radius[sl, j][present], size)
            img[present] = np.where(masks[:, None], rgb[:, :, None, None], img[present])
        img += rng.standard_normal(size=img.shape, dtype=np.float32) * PIXEL_NOISE
        out[sl] = np.rint(np.clip(img, 0.0, 255.0)).astype(np.uint8)
    return out


def _first_k_of_random_order(rng: np.random.Generator, n: int, pool: int) -> np.ndarray:
    """``[n, pool]`` rows of a uniformly random permutation of ``range(pool)`` (argsort of noise)."""
    return np.argsort(rng.random((n, pool)), axis=1)


def generate_multilabel_shapes(
    n: int, image_size: int, empty_fraction: float, max_objects: int, max_distractors: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 [n,3,S,S], multi-hot float32 [n,10], distractor counts int64 [n])``.

    Labelled-object count: 0 with probability ``empty_fraction``, else uniform on
    ``1..max_objects``; distractor count uniform on ``0..max_distractors``; categories of
    one image are distinct (drawn without replacement, uniformly); every object gets its
    own cell of a 3x3 grid, a radius ``U(3, 4.2) * S / 32`` px and a jitter inside the cell.
    """
    c = len(LABELLED)
    n_lab = np.where(
        rng.random(n) < empty_fraction, 0, rng.integers(1, max_objects + 1, size=n)
    ).astype(np.int64)
    n_dis = rng.integers(0, max_distractors + 1, size=n).astype(np.int64)
    lab_order = _first_k_of_random_order(rng, n, c)[:, :max_objects]
    dis_order = _first_k_of_random_order(rng, n, len(DISTRACTORS))[:, :max_distractors]
    slots = max_objects + max_distractors
    cells = _first_k_of_random_order(rng, n, GRID * GRID)[:, :slots]

    pair_shape = np.array([p[0] for p in LABELLED + DISTRACTORS])
    pair_colour = np.array([p[1] for p in LABELLED + DISTRACTORS])
    pair = np.full((n, slots), -1, dtype=np.int64)
    pair[:, :max_objects] = np.where(np.arange(max_objects) < n_lab[:, None], lab_order, -1)
    pair[:, max_objects:] = np.where(np.arange(max_distractors) < n_dis[:, None], dis_order + c, -1)
    shape = np.where(pair >= 0, pair_shape[pair.clip(0)], -1)
    colour = np.where(pair >= 0, pair_colour[pair.clip(0)], 0)

    scale = image_size / 32.0
    radius = rng.uniform(3.0, 4.2, size=(n, slots)) * scale
    cell = image_size / GRID
    room = np.maximum(cell / 2 - radius - 0.5, 0.0)  # how far the centre may move and stay in its cell
    cy = (cells // GRID + 0.5) * cell - 0.5 + rng.uniform(-1, 1, size=(n, slots)) * room
    cx = (cells % GRID + 0.5) * cell - 0.5 + rng.uniform(-1, 1, size=(n, slots)) * room
    images = render_objects(shape, colour, cy, cx, radius, image_size, rng)

    targets = np.zeros((n, c), dtype=np.float32)
    rows, cols = np.nonzero(np.arange(max_objects) < n_lab[:, None])
    targets[rows, lab_order[rows, cols]] = 1.0
    return images, targets, n_dis


def _check_params(sizes, image_size, empty_fraction, max_objects, max_distractors) -> None:
    for split, n in sizes.items():
        if n < 0 or (split == "train" and n == 0):
            raise SoftlossError(f"data.{split}_size must be {'> 0' if split == 'train' else '>= 0'}, got {n}")
    if image_size < 16:
        raise SoftlossError(f"data.image_size must be >= 16 pixels for multilabel_shapes, got {image_size}")
    if not 0.0 <= empty_fraction < 1.0:
        raise SoftlossError(f"data.empty_fraction must be in [0, 1), got {empty_fraction}")
    if not 1 <= max_objects <= len(LABELLED):
        raise SoftlossError(f"data.max_objects must be in [1, {len(LABELLED)}], got {max_objects}")
    if max_distractors < 0 or max_objects + max_distractors > GRID * GRID:
        raise SoftlossError(
            f"data.max_distractors must be >= 0 with max_objects + max_distractors <= {GRID * GRID} "
            f"(one grid cell per object), got {max_distractors}"
        )


@DATASETS.register(
    "multilabel_shapes",
    "synthetic 32x32 colour shapes: 0-3 labelled objects of 10 categories + unlabelled distractors (multilabel)",
)
def build_multilabel_shapes(
    data_root: Path,
    *,
    train_size: int = 12000,
    val_size: int = 2000,
    test_size: int = 2000,
    image_size: int = 32,
    empty_fraction: float = 0.15,
    max_objects: int = 3,
    max_distractors: int = 2,
    seed: int = 0,
) -> DataBundle:
    """Multi-hot targets ``[N, 10]`` (float32) over the labelled (colour, shape) categories.

    Generated once per parameter set and cached under ``data_root``. Each split draws
    from its own child of ``SeedSequence(seed)``. ``augment_ok`` is True: a horizontal
    flip keeps every shape (all are left-right symmetric) and a 4 px crop cannot remove an
    object. Mean/std are per channel on the train split (0..1 scale). Per-sample
    ``extras['distractors']`` holds the number of distractor objects.
    """
    sizes = split_sizes(train_size, val_size, test_size)
    image_size, max_objects, max_distractors = int(image_size), int(max_objects), int(max_distractors)
    empty_fraction, seed = float(empty_fraction), int(seed)
    _check_params(sizes, image_size, empty_fraction, max_objects, max_distractors)
    params = dict(image_size=image_size, empty_fraction=empty_fraction, max_objects=max_objects,
                  max_distractors=max_distractors, seed=seed)

    def generate() -> dict[str, np.ndarray]:
        arrays = {}
        for split, seq in zip(SPLITS, np.random.SeedSequence(seed).spawn(len(SPLITS))):
            x, y, d = generate_multilabel_shapes(sizes[split], image_size, empty_fraction, max_objects,
                                                 max_distractors, np.random.default_rng(seq))
            arrays.update({f"{split}_x": x, f"{split}_y": y, f"{split}_distractors": d})
        return arrays

    splits, _ = cached_splits(data_root, "multilabel_shapes", GENERATOR_VERSION, sizes, params, generate,
                              extras=("distractors",))
    mean, std = pixel_stats(splits["train"], per_channel=True)
    train_counts = splits["train"].targets.sum(0).long().tolist()
    stats = {
        s: {
            "label_counts": splits[s].targets.sum(0).long().tolist(),
            "mean_labels": splits[s].targets.sum(1).mean().item() if sizes[s] else 0.0,
            "empty_share": (splits[s].targets.sum(1) == 0).float().mean().item() if sizes[s] else 0.0,
        }
        for s in SPLITS
    }
    return DataBundle(
        name="multilabel_shapes",
        task=Task("multilabel", len(LABELLED), class_names=CATEGORY_NAMES,
                  extras={"train_class_counts": train_counts}),
        **splits,
        input_shape=(3, image_size, image_size),
        mean=mean,
        std=std,
        augment_ok=True,
        info={
            "sizes": sizes,
            "splits": stats,
            "categories": list(CATEGORY_NAMES),
            "distractor_categories": [f"{COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in DISTRACTORS],
            "empty_fraction": empty_fraction,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
    )
