"""Synthetic ambiguous images for the Average-K scenario (multiclass, known posterior).

Each image shows one object of one of T *visual types*, a (shape, colour) pair that is
easy to recognise. Each type t has a known label distribution ``q_t`` over 1 to
``max_labels`` classes, and the image's label is drawn from it, so ``p(y | x) = q_t``
exactly: some types are unambiguous (one class), others spread over up to five. Type
frequencies follow a Zipf law, so rare types have few training samples, and the classes
they map to are rare too (class frequencies are long-tailed). Because the generator
knows every posterior, the Bayes-oracle Average-K accuracy is known: the bundle reports
it for the population (``info['oracle_avgk_acc']``) and every split carries the per-sample
posterior, from which the metrics compute the oracle on that split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from softloss_cli.data.base import DATASETS, DataBundle
from softloss_cli.data.generated import SPLITS, cached_splits, pixel_stats, split_sizes
from softloss_cli.data.multilabel_shapes import COLOUR_NAMES, SHAPES, render_objects
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

#: Bump when the generator changes, so that cached files of the old one are not reused.
GENERATOR_VERSION = 1
MAX_TYPES = len(SHAPES) * len(COLOUR_NAMES)  # 48 distinct (shape, colour) pairs
AVGK_KS = (1, 2, 3, 5)


def type_table(num_classes: int, num_types: int, max_labels: int, zipf: float, window: int,
               concentration: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The generator's ground truth: type prior, label distribution per type, type visuals.

    - ``prior`` ``[T]``: ``pi_t ∝ (t + 1) ** -zipf`` (type 0 the most frequent).
    - ``probs`` ``[T, C]``: type t has a *home* class ``t mod C`` and ``m_t - 1`` other
      classes drawn without replacement from the home's neighbours within ``window``
      (confusable classes, like species of one genus), with
      ``m_t = max_labels - (t mod max_labels)`` (capped by the neighbours available):
      a fixed cycle rather than a draw, so every ambiguity level has frequent and rare
      types, and the most frequent type (a fifth of the data) is the most ambiguous one,
      which keeps the oracle below 1 up to K = 3 for every seed. The masses are a
      ``Dirichlet(concentration)`` draw sorted so that the home class gets the largest.
      Home classes follow the type order, so frequent types make frequent classes and the
      class frequencies are long-tailed; types ``C..T-1`` are rare and share a home class
      with a frequent type.
    - ``shape``/``colour`` ``[T]``: the type's visuals, a random permutation of the 48 pairs.
    """
    prior = (np.arange(num_types) + 1.0) ** -zipf  # float64 throughout: these are the ground truth
    prior /= prior.sum()
    probs = np.zeros((num_types, num_classes))
    for t in range(num_types):  # T <= 48 types: a loop over the table, not over samples
        home = t % num_classes
        near = [c for c in range(home - window, home + window + 1) if 0 <= c < num_classes and c != home]
        m = min(max_labels - t % max_labels, len(near) + 1)
        classes = [home, *rng.choice(near, size=m - 1, replace=False).tolist()]
        mass = np.sort(rng.dirichlet(np.full(m, concentration)))[::-1]
        probs[t, classes] = mass
    pairs = rng.permutation(MAX_TYPES)[:num_types]
    return {"prior": prior, "probs": probs, "shape": pairs // len(COLOUR_NAMES), "colour": pairs % len(COLOUR_NAMES)}


def population_oracle(prior: np.ndarray, probs: np.ndarray, k: float) -> float:
    """Bayes-optimal Average-K accuracy over the data distribution (not a finite sample).

    The optimal sets include class c for type t when ``q_t(c) >= lambda``, with lambda such
    that ``E|S| = sum_t pi_t |{c : q_t(c) >= lambda}| = k``; at the boundary value a fraction
    of the tied (t, c) entries is included so the budget is met exactly (a randomised rule).
    This is a fractional knapsack: sort the entries by ``q_t(c)`` descending, each costing
    ``pi_t`` expected set size and earning ``pi_t q_t(c)`` expected accuracy.
    """
    value = probs.reshape(-1)
    weight = np.repeat(prior, probs.shape[1])
    order = np.argsort(-value, kind="stable")
    value, weight = value[order], weight[order]
    spent = np.cumsum(weight)
    full = spent <= k
    acc = float((weight * value)[full].sum())
    rest = k - (spent[full][-1] if full.any() else 0.0)
    nxt = int(full.sum())
    if nxt < len(value) and rest > 0:
        acc += rest * value[nxt]
    return acc


def generate_ambiguous(sizes: dict[str, int], image_size: int, table: dict[str, np.ndarray],
                       seed_seq: np.random.SeedSequence) -> dict[str, np.ndarray]:
    """``{split}_x`` uint8 ``[N,3,S,S]``, ``{split}_y`` int64 ``[N]``, ``{split}_type`` int64 ``[N]``.

    Per sample: type ``~ prior``, label ``~ probs[type]`` (inverse-CDF on one uniform, so
    no loop over samples), one object of the type's shape and colour with radius
    ``U(5.5, 7.5) * S / 32`` px near the centre (offset up to 4 px * S / 32).
    """
    arrays = {}
    cdf = np.cumsum(table["probs"], axis=1)
    cdf[:, -1] = 1.0  # guard against rounding: every row's CDF ends at exactly 1
    scale = image_size / 32.0
    for split, seq in zip(SPLITS, seed_seq.spawn(len(SPLITS))):
        rng = np.random.default_rng(seq)
        n = sizes[split]
        types = rng.choice(len(table["prior"]), size=n, p=table["prior"]).astype(np.int64)
        labels = (rng.random(n)[:, None] >= cdf[types]).sum(axis=1).astype(np.int64)
        labels = np.minimum(labels, cdf.shape[1] - 1)
        centre = image_size / 2 - 0.5
        cy = centre + rng.uniform(-4, 4, size=(n, 1)) * scale
        cx = centre + rng.uniform(-4, 4, size=(n, 1)) * scale
        radius = rng.uniform(5.5, 7.5, size=(n, 1)) * scale
        images = render_objects(table["shape"][types][:, None], table["colour"][types][:, None],
                                cy, cx, radius, image_size, rng)
        arrays.update({f"{split}_x": images, f"{split}_y": labels, f"{split}_type": types})
    return arrays


def _check_params(sizes, image_size, num_classes, num_types, max_labels, zipf, window, concentration) -> None:
    for split, n in sizes.items():
        if n < 0 or (split == "train" and n == 0):
            raise SoftlossError(f"data.{split}_size must be {'> 0' if split == 'train' else '>= 0'}, got {n}")
    if image_size < 16:
        raise SoftlossError(f"data.image_size must be >= 16 pixels for ambiguous_images, got {image_size}")
    if num_classes < 2:
        raise SoftlossError(f"data.num_classes must be >= 2, got {num_classes}")
    if not 1 <= num_types <= MAX_TYPES:
        raise SoftlossError(f"data.num_types must be in [1, {MAX_TYPES}] (distinct shape x colour pairs), got {num_types}")
    if not 1 <= max_labels <= num_classes:
        raise SoftlossError(f"data.max_labels must be in [1, num_classes={num_classes}], got {max_labels}")
    if not zipf >= 0:
        raise SoftlossError(f"data.type_zipf must be >= 0 (0 = all types equally frequent), got {zipf}")
    if window < 1:
        raise SoftlossError(f"data.window must be >= 1, got {window}")
    if not concentration > 0:
        raise SoftlossError(f"data.concentration must be > 0, got {concentration}")


AVERAGE_K = 3  # the K whose accuracy monitors best.pt (headline columns: avgk_*_k3)


@DATASETS.register(
    "ambiguous_images",
    "synthetic 24x24 shapes whose type has a known label distribution over 1-5 classes (multiclass, Average-K)",
)
def build_ambiguous_images(
    data_root: Path,
    *,
    train_size: int = 12000,
    val_size: int = 2000,
    test_size: int = 3000,
    image_size: int = 24,
    num_classes: int = 30,
    num_types: int = 48,
    max_labels: int = 5,
    type_zipf: float = 1.0,
    window: int = 4,
    concentration: float = 2.0,
    seed: int = 0,
) -> DataBundle:
    """Multiclass targets (int64), per-sample true posterior ``[N, C]`` and ``extras['type']``.

    The type table and every split come from ``SeedSequence(seed)`` (one child for the
    table, one per split) and are cached under ``data_root``. ``task.extras`` carries
    ``train_class_counts`` (used by the Average-K metrics to bucket classes into
    head/medium/tail) and ``oracle_avgk_acc`` (the population Bayes oracle per K).
    ``augment_ok`` is True: flips and 4 px crops keep the type. ``average_k`` (= 3) declares
    this Average-K data's K: ``trainer.monitor=auto`` picks best.pt by ``val/avgk_acc_k3``, the
    K of the scenario's headline columns, and ``softloss predict`` returns sets of that K.
    """
    sizes = split_sizes(train_size, val_size, test_size)
    image_size, num_classes, num_types, max_labels = int(image_size), int(num_classes), int(num_types), int(max_labels)
    type_zipf, window, concentration, seed = float(type_zipf), int(window), float(concentration), int(seed)
    _check_params(sizes, image_size, num_classes, num_types, max_labels, type_zipf, window, concentration)
    params = dict(image_size=image_size, num_classes=num_classes, num_types=num_types, max_labels=max_labels,
                  type_zipf=type_zipf, window=window, concentration=concentration, seed=seed)

    def generate() -> dict[str, np.ndarray]:
        table_seq, data_seq = np.random.SeedSequence(seed).spawn(2)
        table = type_table(num_classes, num_types, max_labels, type_zipf, window, concentration,
                           np.random.default_rng(table_seq))
        arrays = generate_ambiguous(sizes, image_size, table, data_seq)
        arrays.update({f"table_{k}": v for k, v in table.items()})
        return arrays

    splits, arrays = cached_splits(data_root, "ambiguous_images", GENERATOR_VERSION, sizes, params, generate,
                                   extras=("type",))
    probs = torch.from_numpy(arrays["table_probs"]).float()
    for s, split in splits.items():  # the posterior of a sample is the label distribution of its type
        splits[s] = dataclasses.replace(split, posterior=probs[split.extras["type"]])
    mean, std = pixel_stats(splits["train"], per_channel=True)
    counts = {s: torch.bincount(splits[s].targets, minlength=num_classes).tolist() for s in SPLITS}
    type_counts = torch.bincount(splits["train"].extras["type"], minlength=num_types)
    prior, table_probs = arrays["table_prior"], arrays["table_probs"]
    oracle = {str(k): float(population_oracle(prior, table_probs, k)) for k in AVGK_KS if k < num_classes}
    return DataBundle(
        name="ambiguous_images",
        task=Task("multiclass", num_classes, has_posterior=True,
                  extras={"train_class_counts": counts["train"], "oracle_avgk_acc": oracle,
                          "average_k": AVERAGE_K}),
        **splits,
        input_shape=(3, image_size, image_size),
        mean=mean,
        std=std,
        augment_ok=True,
        info={
            "sizes": sizes,
            "class_counts": counts,
            "train_type_counts": type_counts.tolist(),
            "types": [
                {"shape": SHAPES[int(arrays["table_shape"][t])], "colour": COLOUR_NAMES[int(arrays["table_colour"][t])],
                 "prior": float(prior[t]),
                 "labels": {int(c): float(table_probs[t, c]) for c in np.flatnonzero(table_probs[t])}}
                for t in range(num_types)
            ],
            "oracle_avgk_acc": oracle,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
        },
    )
