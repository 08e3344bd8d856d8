"""scikit-learn's bundled 8x8 handwritten digits: small real data that needs no download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from softloss_cli.data.base import DATASETS, DataBundle, TensorSplit
from softloss_cli.tasks import Task

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


def split_digits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified 60/20/20 train/val/test split of ``load_digits``: ``{split: (uint8 [N,1,8,8], int64 [N])}``.

    Pixel values 0..16 are scaled to 0..255 (rounded) so that the loaders treat them like
    any other uint8 image.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=seed)
    # The val fraction is of the whole set, so it is rescaled to the part left after the test split.
    train, val = train_test_split(
        rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION), stratify=labels[rest], random_state=seed
    )
    return {
        name: (images[idx], labels[idx]) for name, idx in (("train", train), ("val", val), ("test", test))
    }


@DATASETS.register("digits", "scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, no download)")
def build_digits(data_root: Path, *, seed: int = 0) -> DataBundle:
    """The digits set with a fixed stratified 60/20/20 split chosen by ``seed``.

    ``data_root`` is unused (the data ships with scikit-learn). ``augment_ok`` is False:
    a 4-pixel crop padding would move 8x8 digits half out of the frame.
    """
    splits = {
        name: TensorSplit(torch.from_numpy(x), torch.from_numpy(y))
        for name, (x, y) in split_digits(int(seed)).items()
    }
    train_x = splits["train"].inputs.float().div_(255)
    return DataBundle(
        name="digits",
        task=Task("multiclass", 10, class_names=tuple(str(i) for i in range(10))),
        **splits,
        input_shape=(1, 8, 8),
        mean=(train_x.mean().item(),),
        std=(train_x.std().item(),),
        augment_ok=False,
        info={"sizes": {name: len(s) for name, s in splits.items()}, "seed": int(seed)},
    )
