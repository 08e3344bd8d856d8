"""The user's own data: numeric class folders, manifests, the decoded-image cache, image
conversions, the automatic monitor, group sums and ``softloss predict`` (round trip and API)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from softloss_cli.data import build_data
from softloss_cli.data.image_folder import build_image_folder
from softloss_cli.data.images import load_image
from softloss_cli.data.labels import resolve_label_order
from softloss_cli.data.manifest import build_manifest
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task
from softloss_cli.train.run_notes import resolve_monitor


def _png(path, value=0, size=(8, 8), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, colour).save(path)


def _numeric_tree(root, classes, per_class=4):
    for c in classes:
        for i in range(per_class):
            _png(root / str(c) / f"{i}.png", (int(c) * 20 + i * 3) % 256)


# --------------------------------------------------------------------------- label order


def test_numeric_names_sort_numerically_and_become_ordinal_label_values():
    names = [str(i) for i in range(30)]
    order = resolve_label_order(sorted(names), "auto")  # text order in: 0, 1, 10, 11, ...
    assert order.classes == tuple(names) and order.kind == "ordinal" and order.order == "numeric"
    assert order.values == tuple(float(i) for i in range(30))
    assert resolve_label_order(["10", "2.5", "-3"]).classes == ("-3", "2.5", "10")
    words = resolve_label_order(["dog", "cat"], "auto")
    assert words.classes == ("cat", "dog") and words.kind == "multiclass" and words.values is None
    forced = resolve_label_order(["lo", "mid", "hi"], "ordinal", ["lo", "mid", "hi"])
    assert forced.kind == "ordinal" and forced.classes == ("lo", "mid", "hi") and forced.order == "given"
    assert resolve_label_order(["1", "2"], "multiclass").kind == "multiclass"


@pytest.mark.parametrize("found, task, classes, message", [
    (["cat"], "auto", None, r"has 1 class \(cat\): a classifier needs at least 2"),
    (["1", "01"], "auto", None, r"classes '01' and '1' with the same number"),
    (["cat", "emu"], "auto", ["cat", "dog"], r"has class 'emu' that is not in data.classes \(cat, dog\)"),
    (["1", "2"], "sorted", None, r"data.task must be one of auto, multiclass, ordinal, got 'sorted'"),
    (["1", "2"], "auto", ["2", "1"], r"must be in increasing order, got 2, 1"),
    (["a", "b"], "auto", ["a", "a"], r"data.classes names 'a' twice"),
])
def test_label_order_refusals_are_one_line(found, task, classes, message):
    with pytest.raises(SoftlossError, match=message) as info:
        resolve_label_order(found, task, classes)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- image folders


def test_numeric_class_folders_are_ordinal_in_numeric_order(tmp_path):
    _numeric_tree(tmp_path / "counts", range(12), per_class=5)
    bundle = build_data({"name": "image_folder", "root": str(tmp_path / "counts"), "image_size": 8, "channels": 1,
                         "val_fraction": 0.2, "test_fraction": 0.2}, tmp_path / "data")
    task = bundle.task
    assert task.kind == "ordinal" and task.class_names == tuple(str(i) for i in range(12))
    assert task.label_values == tuple(float(i) for i in range(12)) and task.extras["class_order"] == "numeric"
    # every image's label is its folder's number: the pixel value encodes it
    for split in ("train", "val", "test"):
        s = bundle.split(split)
        for path, target in zip(s.paths, s.targets.tolist()):
            assert f"/counts/{target}/" in path


def test_one_class_folder_is_refused_in_one_line(tmp_path):
    _numeric_tree(tmp_path / "one", ["7"])
    with pytest.raises(SoftlossError, match=r"^data.root .*/one has 1 class \(7\): a classifier needs at least 2$"):
        build_image_folder(tmp_path, root=str(tmp_path / "one"))


def test_explicit_classes_order_a_folder(tmp_path):
    for name in ("high", "low", "mid"):
        for i in range(5):
            _png(tmp_path / "t" / name / f"{i}.png", i)
    bundle = build_image_folder(tmp_path, root=str(tmp_path / "t"), image_size=8, task="ordinal",
                                classes=["low", "mid", "high"], val_fraction=0.2, test_fraction=0.2)
    assert bundle.task.kind == "ordinal" and bundle.task.class_names == ("low", "mid", "high")
    assert bundle.task.label_values is None and bundle.task.values == (0.0, 1.0, 2.0)


# --------------------------------------------------------------------------- decoding


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    image = load_image(str(tmp_path / "deep.png"), 8, 1)
    assert int(image.float().mean().round()) == round(32768 / 257)  # 128, not 255
    assert int(load_image(str(tmp_path / "deep.png"), 8, 3)[0, 0, 0]) == 128


def test_palette_rgba_cmyk_and_exif_rotation_are_converted(tmp_path):
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")
    assert load_image(str(tmp_path / "p.png"), 8, 3)[:, 4, 4].tolist() == [10, 200, 30]
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black -> the white background
    rgba.paste((255, 0, 0, 255), (0, 0, 4, 8))  # left half opaque red
    rgba.save(tmp_path / "a.png")
    image = load_image(str(tmp_path / "a.png"), 8, 3)
    assert image[:, 4, 1].tolist() == [255, 0, 0] and image[:, 4, 6].tolist() == [255, 255, 255]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # CMYK red
    red = load_image(str(tmp_path / "c.jpg"), 8, 3)[:, 4, 4].tolist()
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    # A 16x8 image (left red, right blue) stored with EXIF orientation 6 (rotate 90 degrees clockwise to view).
    wide = Image.new("RGB", (16, 8), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    wide.save(tmp_path / "r.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "r.jpg") as img:
        assert img.size == (16, 8)
    upright = load_image(str(tmp_path / "r.jpg"), 8, 3)  # viewed: 8 wide, 16 tall; the centre crop is rows 4..11
    assert upright.shape == (3, 8, 8)
    top, bottom = upright[:, 0, 4].tolist(), upright[:, 7, 4].tolist()
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red above, blue below


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_and_a_touched_file_is_decoded_again(tmp_path):
    _numeric_tree(tmp_path / "c", range(3), per_class=5)
    params = dict(root=str(tmp_path / "c"), image_size=8, channels=1, val_fraction=0.2, test_fraction=0.2)
    first = build_image_folder(tmp_path / "data", **params)
    assert first.info["cache"] == "decoded" and first.info["cache_file"].startswith(str(tmp_path / "data" / "image_cache"))
    again = build_image_folder(tmp_path / "data", **params)
    assert again.info["cache"] == "hit" and torch.equal(again.train.inputs, first.train.inputs)
    target = tmp_path / "c" / "1" / "0.png"
    _png(target, 250)  # new content...
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))  # ...and a new mtime
    changed = build_image_folder(tmp_path / "data", **params)
    assert changed.info["cache"] == "decoded" and changed.info["cache_file"] != first.info["cache_file"]
    split = next(s for s in (changed.train, changed.val, changed.test) if str(target) in s.paths)
    assert int(split.inputs[split.paths.index(str(target))].float().mean()) == 250
    bigger = build_image_folder(tmp_path / "data", **{**params, "image_size": 6})
    assert bigger.info["cache"] == "decoded" and bigger.train.inputs.shape[-1] == 6
    streamed = build_image_folder(tmp_path / "data", **params, cache_max_gb=0)
    assert streamed.info["cache"] == "disk" and isinstance(streamed.train, torch.utils.data.Dataset)


def test_bad_images_fail_in_one_line_or_are_skipped(tmp_path):
    _numeric_tree(tmp_path / "c", range(3), per_class=5)
    (tmp_path / "c" / "2" / "bad.png").write_bytes(b"not a png")
    params = dict(root=str(tmp_path / "c"), image_size=8, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(SoftlossError, match=r"^cannot read image .*/bad.png: .*data.on_bad_image=skip") as info:
        build_image_folder(tmp_path / "data", **params)
    assert "\n" not in str(info.value)
    bundle = build_image_folder(tmp_path / "data", **params, on_bad_image="skip")
    assert [s["path"] for s in bundle.info["skipped_images"]] == [str(tmp_path / "c" / "2" / "bad.png")]
    assert sum(len(bundle.split(s)) for s in ("train", "val", "test")) == 15
    with pytest.raises(SoftlossError, match=r"data.on_bad_image must be one of fail, skip, got 'ignore'"):
        build_image_folder(tmp_path / "data", **params, on_bad_image="ignore")


# --------------------------------------------------------------------------- manifests


def _images(folder, count, value=lambda i: i * 10):
    for i in range(count):
        _png(folder / f"{i}.png", value(i) % 256)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest(tmp_path, lines, name="m.csv", **params):
    return build_manifest(tmp_path / "data", path=str(_write(tmp_path / name, lines)), image_size=8, **params)


def test_manifest_label_column_numeric_is_ordinal_and_split_column_is_used(tmp_path):
    _images(tmp_path / "img", 12)
    lines = ["path,label,split"] + [f"img/{i}.png,{i % 3 * 5},{('train', 'val', 'test')[i % 3 == 0 and i // 3 % 3]}"
                                    for i in range(12)]
    bundle = _manifest(tmp_path, lines)
    assert bundle.task.kind == "ordinal" and bundle.task.class_names == ("0", "5", "10")
    assert bundle.task.label_values == (0.0, 5.0, 10.0)
    expected = {s: [i for i in range(12) if lines[i + 1].endswith(s)] for s in ("train", "val", "test")}
    for split, rows in expected.items():
        assert [os.path.basename(p) for p in bundle.split(split).paths] == [f"{i}.png" for i in rows]
        assert bundle.split(split).targets.tolist() == [i % 3 for i in rows]


def test_manifest_labels_column_is_multilabel_with_empty_images(tmp_path):
    _images(tmp_path / "img", 20)
    sets = ["cat;dog", "", "dog", "cat"]
    bundle = _manifest(tmp_path, ["path,labels"] + [f"img/{i}.png,{sets[i % 4]}" for i in range(20)],
                       val_fraction=0.2, test_fraction=0.2)
    assert bundle.task.kind == "multilabel" and bundle.task.class_names == ("cat", "dog")
    targets = {os.path.basename(p): t.tolist() for s in ("train", "val", "test")
               for p, t in zip(bundle.split(s).paths, bundle.split(s).targets)}
    assert targets["0.png"] == [1.0, 1.0] and targets["1.png"] == [0.0, 0.0] and targets["2.png"] == [0.0, 1.0]
    jsonl = _write(tmp_path / "m.jsonl", [json.dumps({"path": f"img/{i}.png", "labels": sets[i % 4].split(";")
                                                      if sets[i % 4] else []}) for i in range(20)])
    again = build_manifest(tmp_path / "data", path=str(jsonl), image_size=8, val_fraction=0.2, test_fraction=0.2)
    assert again.task.class_names == ("cat", "dog") and torch.equal(again.train.targets, bundle.train.targets)


def test_manifest_not_label_rows_make_a_partial_task(tmp_path):
    _images(tmp_path / "img", 24)
    lines = ["path,label,not_label"]
    for i in range(24):
        lines.append(f"img/{i}.png,,{('cat', 'dog')[i % 2]}" if i % 4 == 3 else f"img/{i}.png,{('cat', 'dog')[i % 2]},")
    bundle = _manifest(tmp_path, lines, val_fraction=0.2, test_fraction=0.2)
    task = bundle.task
    assert task.kind == "partial" and task.base_kind == "multiclass" and task.class_names == ("cat", "dog")
    train = bundle.train
    assert train.targets.shape == (len(train), 2)
    negatives = {os.path.basename(p): t.tolist() for p, t in zip(train.paths, train.targets) if t[1] == 0}
    assert negatives == {f"{i}.png": [i % 2, 0] for i in range(3, 24, 4)}  # every "not" row trains
    assert bundle.val.targets.ndim == 1 and bundle.test.targets.ndim == 1
    assert bundle.info["negative_rows"] == 6


def test_manifest_group_column_travels_as_an_extra_and_stays_in_one_split(tmp_path):
    _images(tmp_path / "img", 48)
    bundle = _manifest(tmp_path, ["path,label,group"] + [f"img/{i}.png,{i % 4},seq{i // 8}" for i in range(48)],
                       val_fraction=0.2, test_fraction=0.2)
    assert bundle.task.extras["group_names"] == [f"seq{g}" for g in range(6)]
    owner = {}
    for split in ("train", "val", "test"):
        s = bundle.split(split)
        assert len(s.extras["group"]) == len(s)
        for path, g in zip(s.paths, s.extras["group"].tolist()):
            assert g == int(os.path.basename(path)[:-4]) // 8
            assert owner.setdefault(g, split) == split  # a group never straddles two splits
    assert len(bundle.val) > 0 and len(bundle.test) > 0


def test_group_sum_mae_matches_a_loop():
    from softloss_cli.metrics import EvalOutputs, compute_metrics

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=gen)
    targets = torch.randint(0, 5, (40,), generator=gen)
    groups = torch.randint(-1, 6, (40,), generator=gen)
    values = (0.0, 1.0, 3.0, 4.0, 10.0)
    task = Task("ordinal", 5, label_values=values)
    out = EvalOutputs(logits, targets, torch.softmax(logits, 1), extras={"group": groups})
    metrics = compute_metrics(out, task)
    probs = torch.softmax(logits.double(), 1).tolist()
    errors, errors_argmax = [], []
    for g in sorted(set(groups.tolist()) - {-1}):
        members = [i for i in range(40) if groups[i] == g]
        expected = sum(sum(p * v for p, v in zip(probs[i], values)) for i in members)
        argmax = sum(values[int(np.argmax(probs[i]))] for i in members)
        truth = sum(values[targets[i]] for i in members)
        errors.append(abs(expected - truth))
        errors_argmax.append(abs(argmax - truth))
    assert metrics["group_sum_mae"] == pytest.approx(np.mean(errors), rel=1e-6)
    assert metrics["group_sum_mae_argmax"] == pytest.approx(np.mean(errors_argmax), rel=1e-6)
    assert "group_sum_mae" not in compute_metrics(EvalOutputs(logits, targets, torch.softmax(logits, 1)), task)


@pytest.mark.parametrize("lines, message", [
    (["path,label,colour", "img/0.png,1,red"], r"m.csv row 1: unknown column 'colour'; columns: path, label, labels"),
    (["file,label", "img/0.png,1"], r"m.csv row 1: unknown column 'file'"),
    (["path,label", "img/0.png,1", "img/9.png,2"], r"m.csv row 3: file img/9.png does not exist"),
    (["path,label", "img/0.png,1", "img/1.png,2", "img/0.png,2"], r"m.csv row 4: duplicate path img/0.png \(also on row 2\)"),
    (["path,label,labels", "img/0.png,1,"], r"m.csv row 1: columns label and labels are mixed"),
    (["path,label", "img/0.png,1", "img/1.png,1,extra"], r"m.csv row 3: more cells than the 2 columns"),
    (["path,label,split", "img/0.png,1,valid"], r"m.csv row 2: split must be train, val or test, got 'valid'"),
    (["path,label,not_label,split", "img/0.png,,1,test"], r"m.csv row 2: a test row needs a label"),
    (["path,label", "img/0.png,"], r"m.csv row 2: no label \(give label, not_label or both\)"),
    (["path,label", ",1"], r"m.csv row 2: empty path"),
    (["path,labels,not_label", "img/0.png,a,b"], r"m.csv row 2: not_label goes with label, not with labels"),
    (["path,label"], r"m.csv lists no images"),
    ([""], r"m.csv row 1: empty manifest"),
])
def test_manifest_refusals_name_the_row(tmp_path, lines, message):
    _images(tmp_path / "img", 3)
    with pytest.raises(SoftlossError, match=message) as info:
        _manifest(tmp_path, lines)
    assert "\n" not in str(info.value)


def test_manifest_refusals_outside_classes_jsonl_and_unreadable(tmp_path):
    _images(tmp_path / "img", 3)
    with pytest.raises(SoftlossError, match=r"m.csv row 3: label 'emu' is not in data.classes \(cat, dog\)"):
        _manifest(tmp_path, ["path,label", "img/0.png,cat", "img/1.png,emu"], classes=["cat", "dog"])
    with pytest.raises(SoftlossError, match=r"m.csv row 2: labels 'emu' is not in data.classes"):
        _manifest(tmp_path, ["path,labels", "img/0.png,cat;emu"], classes=["cat", "dog"])
    rows = [json.dumps({"path": "img/0.png", "label": "cat"}), json.dumps({"path": "img/1.png", "labels": ["dog"]})]
    with pytest.raises(SoftlossError, match=r"m.jsonl row 2: label and labels are mixed"):
        _manifest(tmp_path, rows, name="m.jsonl")
    with pytest.raises(SoftlossError, match=r"m.jsonl row 2: not a JSON object: "):
        _manifest(tmp_path, [rows[0], "{path: oops"], name="m.jsonl")
    with pytest.raises(SoftlossError, match=r"m.jsonl row 1: unknown column 'lable'"):
        _manifest(tmp_path, [json.dumps({"path": "img/0.png", "lable": "cat"})], name="m.jsonl")
    with pytest.raises(SoftlossError, match=r"data.path .*m.txt must be a .csv or .jsonl manifest"):
        _manifest(tmp_path, ["path,label"], name="m.txt")
    with pytest.raises(SoftlossError, match=r"data.path .*nope.csv does not exist"):
        build_manifest(tmp_path, path=str(tmp_path / "nope.csv"))
    with pytest.raises(SoftlossError, match=r"^data=manifest needs data.path="):
        build_manifest(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SoftlossError, match=r"cannot read manifest .*bin.csv: UnicodeDecodeError"):
        build_manifest(tmp_path, path=str(tmp_path / "bin.csv"))


def test_manifest_bad_image_names_its_row_or_is_skipped(tmp_path):
    _images(tmp_path / "img", 10)
    (tmp_path / "img" / "3.png").write_bytes(b"broken")
    lines = ["path,label"] + [f"img/{i}.png,{'ab'[i % 2]}" for i in range(10)]
    with pytest.raises(SoftlossError, match=r"^.*m.csv row 5: cannot read image .*3.png"):
        _manifest(tmp_path, lines, val_fraction=0.2, test_fraction=0.2)
    bundle = _manifest(tmp_path, lines, val_fraction=0.2, test_fraction=0.2, on_bad_image="skip")
    assert len(bundle.info["skipped_images"]) == 1


# --------------------------------------------------------------------------- monitor


def test_monitor_auto_follows_the_task():
    assert resolve_monitor("auto", Task("ordinal", 3)) == "val/mae"
    assert resolve_monitor("auto", Task("multilabel", 3)) == "val/map"
    assert resolve_monitor("auto", Task("multiclass", 3)) == "val/accuracy"
    assert resolve_monitor("auto", Task("partial", 3, base_kind="ordinal")) == "val/mae"
    assert resolve_monitor("auto", Task("multiclass", 30, extras={"average_k": 3})) == "val/avgk_acc_k3"
    assert resolve_monitor("val/qwk", Task("ordinal", 3)) == "val/qwk"


def test_every_trainer_config_defaults_to_auto(compose_cfg):
    for trainer in ("default", "cpu", "gpu", "debug"):
        assert compose_cfg([f"trainer={trainer}"]).trainer.monitor == "auto"


# --------------------------------------------------------------------------- README recipes, predict


def _recipe_blocks() -> dict[str, list[str]]:
    """``{name: [block, ...]}``: the fenced blocks following each ``<!-- test: NAME -->`` marker."""
    found = {}
    for source in (REPO / "README.md", REPO / "docs" / "own-data.md"):
        text = source.read_text()
        for match in re.finditer(r"<!-- test: ([\w-]+) -->\n((?:```\w*\n.*?```\n?)+)", text, flags=re.S):
            found[match.group(1)] = re.findall(r"```\w*\n(.*?)```", match.group(2), flags=re.S)
    return found


def _run_bash(block: str, cwd, env) -> subprocess.CompletedProcess:
    """Run a README block as written, with ``softloss`` meaning this checkout's CLI."""
    script = f'softloss() {{ {shlex.quote(sys.executable)} -m softloss_cli "$@"; }}\nset -e\n{block}'
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """The four README recipes run as written in one folder of tiny generated inputs."""
    root = tmp_path_factory.mktemp("own_data")
    blocks = _recipe_blocks()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOFTLOSS_DATA_ROOT": str(root / "datasets"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("SOFTLOSS_DEBUG", None)
    _numeric_tree(root / "counts", range(12), per_class=10)  # 12 ordinal classes, 10 images each
    for i in range(8):
        _png(root / "seq" / f"{i}.png", (i * 20) % 256)
    # The documented CSV rows first (verbatim), then more rows of the same format.
    colours = {"cat": 30, "dog": 200}
    text2, text3 = blocks["own-data-2"][0], blocks["own-data-3"][0]
    extra2 = [f"img/m{i}.png,{['cat', 'dog', 'cat;dog', ''][i % 4]}" for i in range(36)]
    extra3 = [f"img/n{i}.png,,{'cat' if i % 2 else 'dog'}" if i % 3 == 0 else f"img/n{i}.png,{'cat' if i % 2 else 'dog'},"
              for i in range(36)]
    (root / "labels.csv").write_text(text2 + "\n".join(extra2) + "\n")
    (root / "feedback.csv").write_text(text3 + "\n".join(extra3) + "\n")
    for line in (text2 + "\n".join(extra2) + "\n" + text3 + "\n".join(extra3)).splitlines():
        name = line.split(",")[0]
        if name.startswith("img/") and not (root / name).exists():
            label = line.split(",")[1]
            _png(root / name, colours.get(label.split(";")[0], 120), mode="RGB")
    results = {}
    for name in ("own-data-1", "own-data-2", "own-data-3", "own-data-4"):
        results[name] = _run_bash(blocks[name][-1], root, env)
    return root, results, env


@pytest.mark.slow
def test_readme_recipes_run_as_written(recipes):
    root, results, _ = recipes
    for name, proc in results.items():
        assert proc.returncode == 0, f"{name}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
    task = json.loads((root / "runs" / "counts" / "task.json").read_text())
    assert task["kind"] == "ordinal" and task["class_names"] == [str(i) for i in range(12)]
    assert task["label_values"] == [float(i) for i in range(12)] and task["monitor"] == "val/mae"
    metrics = json.loads((root / "runs" / "counts" / "metrics.json").read_text())
    assert {"test/mae", "test/qwk", "test/rps", "test/group8_sum_mae"} <= set(metrics)
    assert "ordinal, 12 classes in numeric order" in results["own-data-1"].stdout
    assert "warning" not in results["own-data-1"].stderr  # an ordinal loss on ordinal data: no warning
    assert (root / "runs" / "counts" / "plots").is_dir()
    assert "multilabel, 2 classes: cat, dog" in results["own-data-2"].stdout
    assert "trained as partial" in results["own-data-3"].stdout
    predicted = results["own-data-4"].stdout
    assert "group sums" in predicted and "sum_expected" in predicted and predicted.count("seq/") == 8


@pytest.mark.slow
def test_predict_round_trip_reproduces_the_stored_test_logits(recipes):
    from softloss_cli.commands.predict import load_run

    root, _, _ = recipes
    stored = np.load(root / "runs" / "counts" / "predictions" / "test.npz")
    assert len(stored["paths"]) == len(stored["logits"]) and all(os.path.isabs(p) for p in stored["paths"])
    run = load_run(root / "runs" / "counts", device="cpu")
    result = run.predict(list(stored["paths"]), batch_size=5)
    assert result.errors == {}
    np.testing.assert_allclose(result.logits.numpy(), stored["logits"], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_predict_cli_outputs_error_rows_strict_and_group_files(recipes):
    root, _, env = recipes
    (root / "seq" / "broken.png").write_bytes(b"nope")
    proc = _run_bash("softloss predict runs/counts seq --out preds.csv --group-size 4", root, env)
    assert proc.returncode == 0, proc.stderr
    import csv

    rows = list(csv.DictReader((root / "preds.csv").open()))
    assert len(rows) == 9 and [r["path"] for r in rows if r["error"]] == ["seq/broken.png"]
    good = [r for r in rows if not r["error"]]
    assert all(len(r["top5"].split(";")) == 5 and r["expected"] and r["argmax_value"] for r in good)
    groups = list(csv.DictReader((root / "preds.groups.csv").open()))
    assert [g["images"] for g in groups] == ["4", "4", "0"] and groups[2]["unreadable"] == "1"
    assert float(groups[0]["sum_expected"]) == pytest.approx(sum(float(r["expected"]) for r in good[:4]), abs=1e-4)
    strict = _run_bash("softloss predict runs/counts seq --out strict.csv --strict", root, env)
    assert strict.returncode == 2 and not (root / "strict.csv").exists()
    assert strict.stderr.strip().startswith("softloss: error: cannot read image seq/broken.png")
    assert len(strict.stderr.strip().splitlines()) == 1
    jsonl = _run_bash("softloss predict runs/counts seq/0.png --out one.jsonl", root, env)
    assert jsonl.returncode == 0
    record = json.loads((root / "one.jsonl").read_text())
    assert record["path"] == "seq/0.png" and len(record["top5"]) == 5 and "expected" in record
    (root / "seq" / "broken.png").unlink()


@pytest.mark.slow
def test_python_api_example_runs(recipes):
    root, _, env = recipes
    block = _recipe_blocks()["own-data-python"][0]
    proc = subprocess.run([sys.executable, "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("seq/0.png ") and "'sum_expected'" in lines[2]


@pytest.mark.slow
def test_manifest_refusal_through_the_cli_exits_2_in_one_line(recipes):
    root, _, env = recipes
    (root / "bad.csv").write_text("path,label\nimg/a.png,cat\nimg/missing.png,dog\n")
    proc = _run_bash("softloss train data=manifest data.path=bad.csv trainer=debug", root, env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("softloss: error: bad.csv row 3: file img/missing.png does not exist "
                                   f"(paths are relative to {root})".replace(str(root), "."))


def _only_run(root, name):
    (run,) = sorted((root / "runs" / name).iterdir())
    return run


@pytest.mark.slow
def test_predict_average_k_sets_and_multilabel_presence(recipes):
    from softloss_cli.commands.predict import load_run

    root, _, _ = recipes
    feedback = _only_run(root, "manifest-nl")  # partial training, multiclass evaluation: Average-K thresholds stored
    task = json.loads((feedback / "task.json").read_text())
    assert task["kind"] == "partial" and set(task["avgk_thresholds"]) == {"1"} and task["monitor"] == "val/accuracy"
    stored = np.load(feedback / "predictions" / "test.npz")
    result = load_run(feedback, device="cpu", k=1).predict(list(stored["paths"]))
    rows = result.rows()
    metrics = json.loads((feedback / "metrics.json").read_text())
    assert np.mean([r["set_size"] for r in rows]) == pytest.approx(metrics["test/avgk_set_size_k1"])
    covered = [r["path"] for r, y in zip(rows, stored["targets"]) if task["class_names"][y] in r["set"]]
    assert len(covered) / len(rows) == pytest.approx(metrics["test/avgk_acc_k1"])
    with pytest.raises(SoftlossError, match=r"no Average-K threshold for K=3 .*stored K: 1"):
        load_run(feedback, device="cpu", k=3)
    multilabel = load_run(_only_run(root, "manifest-bce"), device="cpu")
    row = multilabel.predict([root / "img" / "a.png"]).rows()[0]
    assert set(row["presence"]) == {"cat", "dog"} and row["set"] == [n for n, p in row["presence"].items() if p >= 0.5]


@pytest.mark.slow
def test_manifest_groups_skipped_images_and_the_report(recipes, tmp_path):
    root, _, env = recipes
    lines = ["path,label,group"] + [f"counts/{i % 4}/{i // 4}.png,{i % 4},g{i // 8}" for i in range(40)]
    (root / "broken.png").write_bytes(b"nope")
    (root / "grouped.csv").write_text("\n".join(lines + ["broken.png,1,g9"]) + "\n")
    proc = _run_bash("softloss train data=manifest data.path=grouped.csv data.image_size=8 data.on_bad_image=skip "
                     "data.val_fraction=0.2 data.test_fraction=0.2 trainer=debug hydra.run.dir=runs/grouped", root, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 unreadable image(s)" in proc.stdout
    assert (root / "runs" / "grouped" / "skipped_images.txt").read_text().startswith(str(root / "broken.png"))
    metrics = json.loads((root / "runs" / "grouped" / "metrics.json").read_text())
    assert {"val/group_sum_mae", "test/group_sum_mae", "test/group_sum_mae_argmax", "test/group8_sum_mae"} <= set(metrics)
    report = _run_bash(f"softloss report runs/counts --no-plots --out {tmp_path}", root, env)
    assert report.returncode == 0, report.stderr
    assert "labels: ordinal, 12 classes in numeric order: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 (label values: these " \
        "numbers)" in report.stdout


@pytest.mark.slow
def test_own_data_benchmark_code_runs():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import own_data

    m = own_data.measure({"images": 100, "size": 8, "batch": 16, "device": "cpu", "workers": 0}, repeats=1)
    assert m["train_images"] == 80 and m["hit_source"] == "hit"
    assert m["first_rate"] > 0 and m["ratio"] > 0 and m["disk_rate"] > 0 and len(m["cached_rates"]) == 1
