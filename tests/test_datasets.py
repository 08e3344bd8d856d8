"""Dataset builders: determinism, caching, shapes, label ranges, splits and one-line errors."""

from __future__ import annotations

import inspect
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from softloss_cli.data import DATASETS, LOADER_KEYS, TensorSplit, synthetic
from softloss_cli.data import cache as cache_mod
from softloss_cli.data.cache import cache_key, cached_arrays
from softloss_cli.data.digits import build_digits
from softloss_cli.data.image_folder import build_image_folder, load_image
from softloss_cli.data.synthetic import build_ordinal_images, count_distribution, render_blobs
from softloss_cli.data.torchvision_sets import build_fake, stratified_split
from softloss_cli.errors import SoftlossError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "softloss_cli" / "configs" / "data"
SMALL = {"train_size": 3000, "val_size": 200, "test_size": 200}


def _arrays(bundle) -> dict[str, torch.Tensor]:
    return {
        f"{s}_{k}": getattr(bundle.split(s), k)
        for s in ("train", "val", "test")
        for k in ("inputs", "targets")
    }


# --------------------------------------------------------------------------- cache


def test_cache_generates_once_and_writes_manifest(tmp_path):
    calls = []

    def generate():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3)}

    params = {"size": 2, "seed": 0}
    first = cached_arrays(tmp_path, "toy", 1, params, generate)
    second = cached_arrays(tmp_path, "toy", 1, params, generate)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["x"], second["x"])
    stem = cache_key("toy", 1, params)
    manifest = json.loads((tmp_path / f"{stem}.json").read_text())
    assert manifest["generator"] == "toy" and manifest["version"] == 1 and manifest["params"] == params
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_cache_key_depends_on_params_and_version_not_key_order():
    assert cache_key("toy", 1, {"a": 1, "b": 2}) == cache_key("toy", 1, {"b": 2, "a": 1})
    assert cache_key("toy", 1, {"a": 1}) != cache_key("toy", 1, {"a": 2})
    assert cache_key("toy", 1, {"a": 1}) != cache_key("toy", 2, {"a": 1})


def test_unreadable_cache_file_is_regenerated(tmp_path):
    generate = lambda: {"x": np.ones(3)}  # noqa: E731
    cached_arrays(tmp_path, "toy", 1, {}, generate)
    path = tmp_path / f"{cache_key('toy', 1, {})}.npz"
    path.write_bytes(b"truncated")
    np.testing.assert_array_equal(cached_arrays(tmp_path, "toy", 1, {}, generate)["x"], np.ones(3))
    assert cache_mod._load(path) is not None


# --------------------------------------------------------------------------- ordinal_images


@pytest.fixture(scope="module")
def ordinal(tmp_path_factory):
    return build_ordinal_images(tmp_path_factory.mktemp("ordinal"), **SMALL)


def test_ordinal_shapes_task_and_info(ordinal):
    assert ordinal.task.kind == "ordinal" and ordinal.task.num_classes == 30
    assert ordinal.task.values == tuple(float(i) for i in range(30))
    assert ordinal.input_shape == (1, 32, 32) and not ordinal.augment_ok
    for split, n in (("train", 3000), ("val", 200), ("test", 200)):
        data = ordinal.split(split)
        assert isinstance(data, TensorSplit)
        assert data.inputs.shape == (n, 1, 32, 32) and data.inputs.dtype == torch.uint8
        assert data.targets.shape == (n,) and data.targets.dtype == torch.int64
        assert 0 <= data.targets.min() and data.targets.max() < 30
        assert ordinal.info["class_counts"][split] == torch.bincount(data.targets, minlength=30).tolist()
    x = ordinal.train.inputs.float() / 255
    assert ordinal.mean[0] == pytest.approx(x.mean().item(), rel=1e-5)
    assert ordinal.std[0] == pytest.approx(x.std().item(), rel=1e-5)


def test_ordinal_labels_are_long_tailed(ordinal):
    counts = np.bincount(ordinal.train.targets.numpy(), minlength=30)
    groups = counts.reshape(6, 5).sum(1)  # 0-4, 5-9, ..., 25-29
    assert np.all(np.diff(groups) < 0), groups
    assert counts[0] > 10 * max(counts[29], 1)
    expected = count_distribution(30, 7.0)
    assert 0.5 * np.abs(counts / counts.sum() - expected).sum() < 0.05  # total variation


def test_ordinal_image_brightness_follows_the_count(ordinal):
    # Every blob adds about 2*pi*sigma^2*peak of light: the image mass must track the label.
    mass = ordinal.train.inputs.float().sum((1, 2, 3)).numpy()
    labels = ordinal.train.targets.numpy()
    assert np.corrcoef(mass, labels)[0, 1] > 0.95
    class_means = [mass[labels == n].mean() for n in range(30) if (labels == n).any()]
    assert np.all(np.diff(class_means) > 0)


def test_overlapping_blobs_combine_by_max(ordinal):
    # A sum of overlapping blobs would saturate crowded images; their max stays below 1.0 + noise.
    crowded = ordinal.train.inputs[ordinal.train.targets >= 20]
    assert len(crowded) > 50
    assert (crowded == 255).sum((1, 2, 3)).float().mean() < 1.0


def test_render_blobs_draws_the_requested_number_of_spots():
    # Well separated blobs are countable as local maxima above half the minimum peak.
    images = render_blobs(np.array([0, 1, 3]), 32, np.random.default_rng(0)).astype(np.float32)[:, 0]
    for image, n in zip(images, (0, 1, 3)):
        padded = np.pad(image, 1)
        neighbours = np.stack(
            [padded[1 + dy : 33 + dy, 1 + dx : 33 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        )
        peaks = (image == neighbours.max(0)) & (image > 0.3 * 255)
        assert peaks.sum() == n


def test_ordinal_is_bit_identical_across_roots(ordinal, tmp_path):
    again = build_ordinal_images(tmp_path, **SMALL)
    for name, tensor in _arrays(ordinal).items():
        assert torch.equal(tensor, _arrays(again)[name]), name


def test_ordinal_second_call_hits_the_cache(tmp_path, monkeypatch):
    build_ordinal_images(tmp_path, train_size=300, val_size=50, test_size=50)
    (npz,) = tmp_path.glob("ordinal_images-*.npz")
    mtime = npz.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(synthetic, "generate_ordinal_images", fail)
    bundle = build_ordinal_images(tmp_path, train_size=300, val_size=50, test_size=50)
    assert len(bundle.train) == 300 and npz.stat().st_mtime_ns == mtime
    manifest = json.loads(npz.with_suffix(".json").read_text())
    assert manifest["params"]["train_size"] == 300 and manifest["params"]["tail"] == 7.0
    with pytest.raises(AssertionError, match="regenerated"):  # other parameters: a new file
        build_ordinal_images(tmp_path, train_size=300, val_size=50, test_size=50, seed=1)


def test_ordinal_splits_are_independent_of_each_other(tmp_path):
    a = build_ordinal_images(tmp_path, train_size=300, val_size=50, test_size=50)
    b = build_ordinal_images(tmp_path, train_size=300, val_size=80, test_size=50)
    c = build_ordinal_images(tmp_path, train_size=300, val_size=50, test_size=50, seed=1)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.inputs, b.test.inputs)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.val.inputs, a.test.inputs) and not torch.equal(a.val.targets, a.test.targets)
    assert not torch.equal(a.train.targets[:50], a.val.targets)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tail": 0}, r"data.tail must be > 0"),
        ({"num_classes": 1}, r"data.num_classes must be >= 2"),
        ({"train_size": 0}, r"data.train_size must be > 0"),
        ({"val_size": -1}, r"data.val_size must be >= 0"),
    ],
)
def test_ordinal_bad_params_are_one_line_errors(tmp_path, params, message):
    with pytest.raises(SoftlossError, match=message) as info:
        build_ordinal_images(tmp_path, **params)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- digits


def test_digits_split_is_stratified_fixed_and_complete(tmp_path):
    from sklearn.datasets import load_digits

    bundle = build_digits(tmp_path)
    assert {s: len(bundle.split(s)) for s in ("train", "val", "test")} == {
        "train": 1077,
        "val": 360,
        "test": 360,
    }
    assert bundle.task.kind == "multiclass" and bundle.task.class_names == tuple("0123456789")
    assert bundle.input_shape == (1, 8, 8) and not bundle.augment_ok
    assert bundle.train.inputs.dtype == torch.uint8 and bundle.train.inputs.max() == 255
    total = np.bincount(load_digits().target, minlength=10)
    for split, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = np.bincount(bundle.split(split).targets.numpy(), minlength=10)
        assert np.all(np.abs(counts - fraction * total) <= 1.5), (split, counts)
    # The three splits are a partition of the whole set (as a multiset of images and labels).
    rows = torch.cat(
        [
            torch.cat([s.inputs.flatten(1), s.targets[:, None].to(torch.uint8)], 1)
            for s in (bundle.train, bundle.val, bundle.test)
        ]
    )
    digits = load_digits()
    full = np.concatenate([np.rint(digits.data * 255 / 16), digits.target[:, None]], 1).astype(np.uint8)
    assert sorted(map(bytes, rows.numpy())) == sorted(map(bytes, full))
    again, other = build_digits(tmp_path), build_digits(tmp_path, seed=1)
    assert all(torch.equal(v, _arrays(again)[k]) for k, v in _arrays(bundle).items())
    assert not torch.equal(bundle.test.inputs, other.test.inputs)


# --------------------------------------------------------------------------- fake


def test_fake_shapes_labels_and_determinism(tmp_path):
    bundle = build_fake(tmp_path, train_size=40, val_size=10, test_size=10, image_size=16, num_classes=5)
    assert bundle.input_shape == (3, 16, 16) and bundle.task.num_classes == 5
    assert bundle.train.inputs.shape == (40, 3, 16, 16) and bundle.train.inputs.dtype == torch.uint8
    assert bundle.train.targets.dtype == torch.int64 and 0 <= bundle.train.targets.min()
    assert bundle.train.targets.max() < 5
    again = build_fake(tmp_path, train_size=40, val_size=10, test_size=10, image_size=16, num_classes=5)
    assert all(torch.equal(v, _arrays(again)[k]) for k, v in _arrays(bundle).items())
    assert not torch.equal(bundle.train.inputs[:10], bundle.val.inputs)
    other = build_fake(
        tmp_path, train_size=40, val_size=10, test_size=10, image_size=16, num_classes=5, seed=1
    )
    assert not torch.equal(bundle.train.inputs, other.train.inputs)


# --------------------------------------------------------------------------- torchvision sets

OFFICIAL_NAMES = ("cifar10", "cifar100", "mnist", "fashion_mnist")


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_missing_official_files_name_the_folder_and_the_fix(tmp_path, name):
    with pytest.raises(SoftlossError) as info:
        DATASETS.get(name)(tmp_path)
    assert str(info.value) == (
        f"{name} not found under {tmp_path / name}: put torchvision's files there or pass data.download=true"
    )


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format of MNIST: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_files(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.broadcast_to((labels * 20 + (prefix == "t10k"))[:, None, None], (n, 28, 28))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_sets_load_from_idx_files(tmp_path, name, folder):
    _mnist_files(tmp_path / name / folder / "raw", n_train=100, n_test=20)
    bundle = DATASETS.get(name)(tmp_path, val_fraction=0.2)
    assert bundle.input_shape == (1, 28, 28) and not bundle.augment_ok and len(bundle.mean) == 1
    assert bundle.task.num_classes == 10 and len(bundle.task.class_names) == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (80, 20, 20)
    assert torch.equal(torch.bincount(bundle.val.targets, minlength=10), torch.full((10,), 2))  # stratified
    for split in (bundle.train, bundle.val):
        assert split.inputs.dtype == torch.uint8
        assert torch.equal(
            split.inputs[:, 0, 5, 7].long(), split.targets * 20
        )  # images stay with their labels
    assert torch.equal(bundle.test.inputs[:, 0, 0, 0].long(), bundle.test.targets * 20 + 1)
    again = DATASETS.get(name)(tmp_path, val_fraction=0.2)
    assert torch.equal(bundle.val.inputs, again.val.inputs)


def test_unreadable_mnist_files_are_a_one_line_error(tmp_path):
    _mnist_files(tmp_path / "mnist" / "MNIST" / "raw", n_train=10, n_test=10)
    (tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(SoftlossError, match=r"^cannot read mnist under .*mnist \(") as info:
        DATASETS.get("mnist")(tmp_path)
    assert "\n" not in str(info.value)


def _cifar_files(folder: Path, files: dict[str, int], label_key: str, meta: tuple[str, dict]) -> None:
    """CIFAR's python pickles: rows of 3072 bytes (channel-major); channel c of image i holds 50c + label."""
    folder.mkdir(parents=True)
    for filename, n in files.items():
        labels = np.arange(n) % 10
        data = np.repeat(50 * np.arange(3)[None, :] + labels[:, None], 1024, axis=1).astype(np.uint8)
        with open(folder / filename, "wb") as f:
            pickle.dump({"data": data, label_key: labels.tolist()}, f)
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_from_pickled_batches(tmp_path, monkeypatch, name):
    import torchvision.datasets.cifar

    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True
    )  # md5 of real files
    if name == "cifar10":
        files = {**{f"data_batch_{i}": 20 for i in range(1, 6)}, "test_batch": 30}
        _cifar_files(
            tmp_path / name / "cifar-10-batches-py",
            files,
            "labels",
            ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]}),
        )
        n_classes, n_train = 10, 100
    else:
        _cifar_files(
            tmp_path / name / "cifar-100-python",
            {"train": 100, "test": 30},
            "fine_labels",
            ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]}),
        )
        n_classes, n_train = 100, 100
    bundle = DATASETS.get(name)(tmp_path, val_fraction=0.1)
    assert bundle.task.num_classes == n_classes and bundle.augment_ok and len(bundle.mean) == 3
    assert bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (n_train - 10, 10, 30)
    expected = 50 * torch.arange(3)[None, :] + bundle.train.targets[:, None]  # [N, C]: channels first
    assert torch.equal(bundle.train.inputs[:, :, 3, 4].long(), expected)
    assert bundle.train.inputs.is_contiguous()


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_val_fraction_out_of_range(tmp_path, bad):
    _mnist_files(tmp_path / "mnist" / "MNIST" / "raw", n_train=10, n_test=10)
    with pytest.raises(SoftlossError, match=r"data.val_fraction must be in \[0, 1\)"):
        DATASETS.get("mnist")(tmp_path, val_fraction=bad)


def test_stratified_split_partitions_each_class_by_fraction():
    targets = torch.arange(300) % 3
    targets[:100] = 0  # unbalanced: class 0 has 134 samples
    rest, val, test = stratified_split(targets, (0.1, 0.2), seed=0)
    assert torch.equal(torch.cat([rest, val, test]).sort().values, torch.arange(300))
    for c in range(3):
        n = int((targets == c).sum())
        assert int((targets[val] == c).sum()) == int(np.floor(0.1 * n + 0.5))
        assert int((targets[test] == c).sum()) == int(np.floor(0.3 * n + 0.5)) - int(np.floor(0.1 * n + 0.5))
    again = stratified_split(targets, (0.1, 0.2), seed=0)
    assert all(torch.equal(a, b) for a, b in zip((rest, val, test), again))
    assert not torch.equal(val, stratified_split(targets, (0.1, 0.2), seed=1)[1])


# --------------------------------------------------------------------------- image_folder

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255), "yak": (9, 9, 9)}


def _image_tree(folder: Path, per_class: int, classes=("cat", "dog", "emu")) -> None:
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (30, 20), COLOURS[name]).save(folder / name / f"{i:02d}.png")


def test_image_folder_single_folder_is_split_by_fractions(tmp_path):
    _image_tree(tmp_path / "pets", per_class=10)
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    bundle = build_image_folder(
        tmp_path, root=str(tmp_path / "pets"), image_size=16, val_fraction=0.2, test_fraction=0.3
    )
    assert bundle.task.class_names == ("cat", "dog", "emu") and bundle.input_shape == (3, 16, 16)
    assert bundle.augment_ok and bundle.mean == (0.485, 0.456, 0.406)
    for split, per_class in (("train", 5), ("val", 2), ("test", 3)):
        data = bundle.split(split)
        assert isinstance(data, TensorSplit)  # decoded once, trained from memory
        assert torch.equal(torch.as_tensor(data.targets).bincount(minlength=3), torch.full((3,), per_class))
    paths = [set(bundle.split(s).paths) for s in ("train", "val", "test")]
    assert sum(map(len, paths)) == 30 and len(set.union(*paths)) == 30
    image, label = bundle.val.inputs[0], int(bundle.val.targets[0])
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    colour = torch.tensor(COLOURS[bundle.task.class_names[label]], dtype=torch.uint8)
    assert torch.equal(image[:, 8, 8], colour)  # the image matches its label
    again = build_image_folder(
        tmp_path, root=str(tmp_path / "pets"), image_size=16, val_fraction=0.2, test_fraction=0.3
    )
    other = build_image_folder(
        tmp_path, root=str(tmp_path / "pets"), image_size=16, val_fraction=0.2, test_fraction=0.3, seed=1
    )
    assert again.val.paths == bundle.val.paths and other.val.paths != bundle.val.paths


def test_build_data_gives_multiclass_sets_their_training_class_counts(tmp_path):
    """The Average-K head/medium/tail buckets come from the training labels for every
    multiclass dataset, so the metrics (val) and the figure (test) agree on them."""
    from softloss_cli.data import build_data

    _image_tree(tmp_path / "pets", per_class=10)
    (tmp_path / "pets" / "emu" / "extra.png").write_bytes((tmp_path / "pets" / "emu" / "00.png").read_bytes())
    bundle = build_data({"name": "image_folder", "root": str(tmp_path / "pets"), "image_size": 16,
                         "val_fraction": 0.2, "test_fraction": 0.3}, tmp_path)
    expected = torch.as_tensor(bundle.train.targets).bincount(minlength=3).tolist()
    assert bundle.task.extras["train_class_counts"] == expected and sum(expected) == len(bundle.train)
    digits = build_data({"name": "digits"}, tmp_path)
    assert sum(digits.task.extras["train_class_counts"]) == len(digits.train)
    ordinal = build_data({"name": "ordinal_images", "train_size": 64, "val_size": 16, "test_size": 16}, tmp_path)
    assert "train_class_counts" not in ordinal.task.extras  # only multiclass tasks are bucketed


def test_image_folder_split_layout_uses_given_folders_and_carves_the_rest(tmp_path):
    _image_tree(tmp_path / "train", per_class=10)
    _image_tree(tmp_path / "val", per_class=2)
    bundle = build_image_folder(tmp_path, root=str(tmp_path), image_size=8, test_fraction=0.2, channels=1)
    assert bundle.info["layout"] == "train/val/test" and bundle.task.class_names == ("cat", "dog", "emu")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 6, 6)
    assert all("/val/" in p for p in bundle.val.paths) and all("/train/" in p for p in bundle.test.paths)
    image = bundle.test.inputs[0]
    assert image.shape == (1, 8, 8) and bundle.input_shape == (1, 8, 8) and len(bundle.mean) == 1


def test_load_image_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    # 40x20 image: red | green (columns 8..31) | blue; the central 20x20 square is all green.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :8, 0] = pixels[:, 8:32, 1] = pixels[:, 32:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(str(tmp_path / "wide.png"), image_size=10, channels=3)
    assert image.shape == (3, 10, 10) and image.dtype == torch.uint8
    assert (image[1] > 200).all() and (image[0] < 50).all() and (image[2] < 50).all()
    gray = load_image(str(tmp_path / "wide.png"), image_size=10, channels=1)
    assert gray.shape == (1, 10, 10) and (gray - 150).abs().max() <= 2  # ITU-R 601 luma of green


def test_image_folder_val_with_other_classes_is_refused(tmp_path):
    _image_tree(tmp_path / "train", per_class=2)
    _image_tree(tmp_path / "val", per_class=1, classes=["cat", "dog", "yak"])
    with pytest.raises(
        SoftlossError,
        match=r"val must hold the same class folders as its train/ \(missing: emu; extra: yak\)",
    ):
        build_image_folder(tmp_path, root=str(tmp_path))


def test_image_folder_corrupt_image_names_the_file(tmp_path):
    _image_tree(tmp_path / "pets", per_class=3)
    bad = tmp_path / "pets" / "dog" / "x.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(SoftlossError, match=rf"^cannot read image {bad}: ") as info:
        build_image_folder(tmp_path, root=str(tmp_path / "pets"), val_fraction=0, test_fraction=0)
    assert "\n" not in str(info.value)
    streamed = build_image_folder(tmp_path, root=str(tmp_path / "pets"), val_fraction=0, test_fraction=0,
                                  cache_max_gb=0)  # too big to cache: read per batch, fails when read
    with pytest.raises(SoftlossError, match=rf"^cannot read image {bad}: "):
        streamed.train[streamed.train.paths.index(str(bad))]


def test_image_folder_missing_root_and_no_root(tmp_path):
    with pytest.raises(SoftlossError, match=rf"^data.root {tmp_path / 'nope'} does not exist: "):
        build_image_folder(tmp_path, root=str(tmp_path / "nope"))
    with pytest.raises(SoftlossError, match=r"^data=image_folder needs data.root=/path/to/folder$"):
        build_image_folder(tmp_path)
    with pytest.raises(SoftlossError, match=r"has no class folders"):
        build_image_folder(tmp_path, root=str(tmp_path))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_data_config_matches_its_builder(path):
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert next(iter(cfg)) == "name" and cfg["name"] == path.stem
    assert {"batch_size", "eval_batch_size", "num_workers", "augment"} <= set(cfg)
    params = inspect.signature(DATASETS.get(cfg["name"])).parameters
    defaults = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert next(iter(params)) == "data_root"
    assert {k: v for k, v in cfg.items() if k not in LOADER_KEYS} == defaults
    # augmentation is on by default where crops and flips keep the label
    bundle_augment_ok = {"cifar10": True, "cifar100": True, "image_folder": True, "manifest": True,
                         "ambiguous_images": True}.get(
        cfg["name"], False
    )
    assert cfg["augment"] is bundle_augment_ok


def test_builders_do_not_import_torchvision_at_module_level():
    import subprocess
    import sys

    code = "import sys, softloss_cli.data; print('torchvision' in sys.modules, 'sklearn' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]
