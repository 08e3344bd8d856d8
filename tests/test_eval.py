"""``softloss eval RUN_DIR``: reproduces metrics.json exactly, evaluates other checkpoints and
splits, evaluates on another dataset of the same task (an ImageFolder), and refuses bad
input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from omegaconf import OmegaConf
from PIL import Image

from softloss_cli.commands import evaluate as evaluation
from softloss_cli.errors import SoftlossError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    """One tiny run on FakeData (10 classes, 3x32x32), two epochs, shared by this module.

    Trained with one CPU thread, as a joblib sweep worker is: ``eval`` (with the machine's
    default threads) must still reproduce its numbers bit for bit."""
    run = tmp_path_factory.mktemp("eval") / "run"
    proc = run_cli("train", *TINY, "data=fake", "trainer.epochs=2", f"paths.data_root={data_root}",
                   f"hydra.run.dir={run}", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "task.json").read_text())["torch_threads"] == 1
    return run


def _image_tree(root: Path, classes: int, per_split: dict[str, int]) -> Path:
    """root/{train,val,test}/<class>/<i>.png: random 40x40 RGB images (resized to 32 by the builder)."""
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_eval_without_overrides_reproduces_metrics_json_exactly(trained, cli):
    proc = cli("eval", str(trained), "--json")
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(proc.stdout)
    saved = json.loads((trained / "metrics.json").read_text())
    assert evaluated == saved  # every name, every bit (json round-trips floats exactly)

    table = cli("eval", str(trained))
    assert table.returncode == 0, table.stderr
    assert f"{len(saved)} metrics identical to {trained / 'metrics.json'}" in " ".join(table.stdout.split())


@pytest.mark.slow
def test_checkpoint_and_split_options(trained, tmp_path, cli, data_root):
    saved = json.loads((trained / "metrics.json").read_text())
    test_only = evaluation.evaluate_run(trained, split="test")
    assert test_only == {k: v for k, v in saved.items() if k.startswith("test/")}
    last = evaluation.evaluate_run(trained, checkpoint="last", split="val")
    assert set(last) == {k for k in saved if k.startswith("val/")}
    out = tmp_path / "m.json"
    assert evaluation.main([str(trained), "--checkpoint", "last", "--split", "val", "--json",
                            "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == last
    # Overrides may follow the options, as the README and users write them.
    proc = cli("eval", str(trained), "--checkpoint", "last", "--split", "val", "--json", f"paths.data_root={data_root}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == last


@pytest.mark.slow
def test_eval_on_an_image_folder_of_the_same_task(trained, tmp_path):
    tree = _image_tree(tmp_path / "images", classes=10, per_split={"train": 2, "val": 3, "test": 4})
    metrics = evaluation.evaluate_run(trained, ["data=image_folder", f"data.root={tree}", "data.image_size=32",
                                                "data.num_workers=0", "data.eval_batch_size=16"])
    names = {k.split("/", 1)[1] for k in metrics}
    assert {"accuracy", "nll", "ece", "topk_acc_k5"} <= names
    assert {k.split("/", 1)[0] for k in metrics} == {"val", "test"}
    assert all(0.0 <= metrics[f"{s}/accuracy"] <= 1.0 for s in ("val", "test"))
    # 4 test images per class: accuracy is a multiple of 1/40
    assert metrics["test/accuracy"] * 40 == pytest.approx(round(metrics["test/accuracy"] * 40))


@pytest.mark.slow
def test_data_of_another_size_is_a_one_line_error(trained, tmp_path):
    tree = _image_tree(tmp_path / "three", classes=3, per_split={"train": 1, "val": 1, "test": 1})
    with pytest.raises(SoftlossError, match=r"checkpoints/best.pt does not fit the model built for data=image_folder "
                                            r"\(3 classes, input \[3, 32, 32\]\): .* is \[10, \d+\] in the checkpoint"):
        evaluation.evaluate_run(trained, ["data=image_folder", f"data.root={tree}", "data.image_size=32",
                                          "data.num_workers=0"])


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["{run}", "model.channels=[8]"], "eval: cannot override 'model.channels': eval takes data=..., data.*, paths.*"),
    (["{run}", "data.sizee=3"], "unknown config key 'data.sizee'; keys under data: augment, batch_size"),
    (["{run}", "data=nope"], "unknown data 'nope'; choose one of: "),
    (["{run}", "--checkpoint", "worst"], "eval: argument --checkpoint: invalid choice: 'worst'"),
    (["{tmp}/nope"], "{tmp}/nope does not exist: pass a run directory"),
    (["{tmp}"], "{tmp} is not a run directory: {tmp}/.hydra/config.yaml does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, cli, args, message):
    fill = {"run": trained, "tmp": tmp_path}
    proc = cli("eval", *[a.format(**fill) for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softloss: error: " + message.format(**fill)), proc.stderr


@pytest.mark.slow
def test_missing_checkpoint_names_what_exists(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "checkpoints" / "best.pt").unlink()
    with pytest.raises(SoftlossError, match=rf"^{copy}/checkpoints/best.pt does not exist; this run has: last$"):
        evaluation.evaluate_run(copy)


def test_apply_overrides_edits_only_the_data_and_resolves_relative_paths(tmp_path):
    cfg = OmegaConf.create({"data": {"name": "fake", "train_size": 10, "root": "imgs"},
                            "paths": {"data_root": "datasets"}, "trainer": {"device": "auto"}, "model": {"a": 1}})
    (tmp_path / "imgs").mkdir()
    (tmp_path / "datasets").mkdir()
    out = evaluation.apply_overrides(cfg, ["data.train_size=20", "trainer.device=cpu", "+data.extra=x"], cwd=str(tmp_path))
    assert out.data.train_size == 20 and out.data.extra == "x" and out.trainer.device == "cpu"
    # relative paths of the run, as it saw them from the directory it was started in
    assert out.data.root == str(tmp_path / "imgs") and out.paths.data_root == str(tmp_path / "datasets")
    swapped = evaluation.apply_overrides(OmegaConf.create(OmegaConf.to_container(cfg)), ["data=digits"])
    assert swapped.data.name == "digits" and "train_size" not in swapped.data
    with pytest.raises(SoftlossError, match="eval: 'oops' is not an override"):
        evaluation.apply_overrides(cfg, ["oops"])


def test_compare_reports_differences_and_new_names():
    nan = float("nan")
    assert evaluation.compare({"a": 1.0, "b": nan, "c": 2.0}, {"a": 1.0, "b": nan, "d": 3.0}) == ([], ["c"], ["d"])
    assert evaluation.compare({"a": 1.0}, {"a": 1.0 + 1e-16 * 4}) == (["a"], [], [])
