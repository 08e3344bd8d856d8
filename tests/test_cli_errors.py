"""Every bad input gets one line on stderr and a non-zero exit, never a traceback (unless
SOFTLOSS_DEBUG=1): unknown choice, misspelt key, incompatible loss/data, missing data root,
labels out of range, corrupt image, non-finite loss (exit 3, last good checkpoint kept)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from softloss_cli.config import catalog
from softloss_cli.data.base import check_targets
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import Task

CPU = ["trainer.device=cpu", "trainer.precision=fp32", "trainer.progress=none", "trainer.epochs=1"]


def one_error_line(proc, code: int) -> str:
    """The single stderr line of a failed command (asserting the exit code and no traceback)."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("softloss: error: ")
    return lines[0].removeprefix("softloss: error: ")


# --------------------------------------------------------------------------- configuration


def test_unknown_group_choice_lists_the_choices(cli, tmp_path):
    message = one_error_line(cli("train", "loss=nope", cwd=tmp_path), 2)
    assert message == f"unknown loss 'nope'; choose one of: {', '.join(catalog.choices('loss'))}"
    message = one_error_line(cli("train", "-m", "data=fake,nope", cwd=tmp_path), 2)
    assert message.startswith("unknown data 'nope'; choose one of: ") and "ordinal_images" in message
    assert not (tmp_path / "runs").exists()  # refused before Hydra made a run directory


def test_misspelt_key_suggests_the_right_one(cli, tmp_path):
    message = one_error_line(cli("train", "trainer.epoch=3", cwd=tmp_path), 2)
    assert message.startswith("unknown config key 'trainer.epoch' (did you mean trainer.epochs?); keys under trainer: ")
    assert "epochs" in message.split("keys under trainer: ")[1].split(", ")


@pytest.mark.slow
def test_incompatible_loss_and_data_names_the_losses_that_fit(cli, tmp_path, data_root):
    ordinal_only = [n for n in catalog.choices("loss") if "ordinal" not in catalog.loss_class(n).task_kinds]
    if not ordinal_only:
        pytest.skip("every loss accepts ordinal data")
    loss = ordinal_only[0]
    message = one_error_line(cli("train", f"loss={loss}", "data=ordinal_images", *TINY,
                                 f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert message.startswith(f"loss={loss} does not fit data=ordinal_images (task kind 'ordinal'); "
                              "losses for ordinal data: ")
    assert "ce" in message.split("losses for ordinal data: ")[1].split(", ")


# --------------------------------------------------------------------------- data


@pytest.mark.slow
def test_missing_data_root(cli, tmp_path):
    message = one_error_line(cli("train", "data=image_folder", "data.root=/nope", *CPU,
                                 f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert message == "data.root /nope does not exist: pass a folder holding <class>/<image> or train/<class>/<image>"
    assert not (tmp_path / "run").exists()  # refused before training: nothing written (docs/faults.md)


@pytest.mark.parametrize(("task", "split", "targets", "message"), [
    (Task("multiclass", 10), "train", torch.tensor([0, 3, 10, 2]),
     "train split has label 10 outside [0, 10) for a multiclass task with 10 classes"),
    (Task("ordinal", 30), "test", torch.tensor([5, -1]),
     "test split has label -1 outside [0, 30) for a ordinal task with 30 classes"),
    (Task("partial", 4, base_kind="multiclass"), "train", torch.tensor([[1, 1], [7, 0]]),
     "train split has label 7 outside [0, 4) for a partial task with 4 classes"),
    (Task("partial", 4, base_kind="ordinal"), "val", torch.tensor([0, 4]),
     "val split has label 4 outside [0, 4) for a ordinal task with 4 classes"),
    (Task("multilabel", 5), "train", torch.zeros(3, 4),
     "train split: multilabel targets must be [N, 5]"),
])
def test_check_targets_refuses_labels_out_of_range(task, split, targets, message):
    with pytest.raises(SoftlossError) as info:
        check_targets(task, split, targets)
    assert str(info.value) == message


def test_check_targets_accepts_labels_in_range():
    check_targets(Task("multiclass", 3), "train", torch.tensor([0, 1, 2]))
    check_targets(Task("multilabel", 3), "train", torch.zeros(2, 3))
    check_targets(Task("multiclass", 3), "val", torch.zeros(0, dtype=torch.int64))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic (0, 0, 0x08 = uint8, ndim), big-endian int32 dims, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_labels_out_of_range_in_real_files_end_to_end(cli, tmp_path):
    """MNIST files whose label file holds a 12 (MNIST has 10 classes): refused before training."""
    raw = tmp_path / "data" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = np.arange(n) % 10
        if prefix == "train":
            labels[7] = 12
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), dtype=np.uint8))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    message = one_error_line(cli("train", "data=mnist", "model=mlp", *CPU, f"paths.data_root={tmp_path / 'data'}",
                                 f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert message in (f"{s} split has label 12 outside [0, 10) for a multiclass task with 10 classes"
                       for s in ("train", "val"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_corrupt_image_names_the_file(cli, tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split in ("train", "val", "test"):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    bad = root / "train" / "dog" / "broken.png"
    bad.write_bytes(b"this is not a png")
    # One DataLoader worker: the error crosses a process boundary and still reads as one line.
    message = one_error_line(cli("train", "data=image_folder", f"data.root={root}", "data.image_size=16",
                                 "data.num_workers=1", "data.batch_size=4", "model=mlp", *CPU,
                                 f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert message.startswith(f"cannot read image {bad}: ")


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_non_finite_loss_exit_3_keeps_the_last_good_checkpoint(cli, tmp_path, data_root):
    run = tmp_path / "run"
    common = ["data=fake", *TINY, f"paths.data_root={data_root}", f"hydra.run.dir={run}"]
    assert cli("train", *common).returncode == 0
    last = run / "checkpoints" / "last.pt"
    # Weights that overflow every forward pass (as after a blow-up), then resume for a second
    # epoch with the run's own config: diverges at once in epoch 2.
    from softloss_cli.train import checkpoint as ckpt

    state = ckpt.load(last)  # verified; saved again below with a checksum of the new content
    state["model"] = {k: (v * 1e30 if v.is_floating_point() else v) for k, v in state["model"].items()}
    ckpt.save_atomic(state, last)
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    proc = cli("train", *common, "trainer.epochs=2", "trainer.resume=true")
    message = one_error_line(proc, 3)
    assert message.startswith("non-finite loss at epoch 2, step ")
    assert message.endswith(f"the last good checkpoint is {last}")
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest  # untouched
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged" and status["reason"] == message
    assert "diverged: non-finite loss" in (run / "train.log").read_text()


@pytest.mark.slow
def test_non_finite_loss_in_the_first_epoch_and_debug_traceback(cli, tmp_path, data_root):
    run = tmp_path / "run"
    common = ["data=fake", *TINY, "optim.lr=1e30", f"paths.data_root={data_root}", f"hydra.run.dir={run}"]
    message = one_error_line(cli("train", *common), 3)
    assert message.startswith("non-finite loss at epoch 1, step ")
    assert message.endswith("the last good checkpoint is none (first epoch)")
    assert not (run / "checkpoints" / "last.pt").exists()
    debug = cli("train", *common, "trainer.overwrite=true", env={"SOFTLOSS_DEBUG": "1"})
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "DivergedError" in debug.stderr


@pytest.mark.slow
def test_bad_value_of_a_known_key_is_one_line(cli, tmp_path, data_root):
    message = one_error_line(cli("train", "data=fake", *TINY, "seed=abc", f"paths.data_root={data_root}",
                                 f"hydra.run.dir={tmp_path / 'run'}"), 2)
    assert message == "seed must be an integer, got 'abc'"


@pytest.mark.parametrize(("override", "expected"), [
    ("optim.lr=-1", "optim.lr must be a finite number >= 0, got -1"),
    ("optim.lr=nan", "optim.lr must be a finite number >= 0, got nan"),
    ("seed=abc", "seed must be an integer, got 'abc'"),
    ("seed=1.5", "seed must be an integer, got 1.5"),
    ("trainer.epochs=abc", "trainer.epochs must be an integer, got 'abc'"),
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("trainer.log_every=0", "trainer.log_every must be >= 1, got 0"),
    ("trainer.threads=0", "trainer.threads must be >= 1, got 0"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("data.eval_batch_size=-2", "data.eval_batch_size must be >= 1, got -2"),
    ("trainer.progress=pony", "trainer.progress must be one of auto, rich, plain, none, got 'pony'"),
    ("trainer.fused_loss=sometimes", "trainer.fused_loss must be one of auto, kernel, compile, off, got 'sometimes'"),
    ("trainer.grad_clip=0", "trainer.grad_clip must be null or a number > 0, got 0"),
])
def test_values_of_the_wrong_type_or_range_are_refused_before_work(compose_cfg, override, expected):
    from softloss_cli.train.loop import check_run_values

    check_run_values(compose_cfg([]))  # the defaults pass
    with pytest.raises(SoftlossError) as info:
        check_run_values(compose_cfg([override]))
    assert str(info.value) == expected


def test_pretrained_weights_that_cannot_be_fetched_name_the_file_and_the_way_out(monkeypatch, tmp_path, capsys):
    """No network here (nor in CI): the download fails, and the user is told which file to put where,
    in one line, not as an 'invalid config' of the model class."""
    import urllib.error

    import torch.hub

    from softloss_cli import cli
    from softloss_cli.models import ResNet18

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SoftlossError) as info:
        ResNet18((3, 32, 32), 10, pretrained=True)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    assert str(info.value) == ("cannot load pretrained resnet18 weights (<urlopen error [Errno -2] Name or service not "
                               f"known>); put resnet18-f37072fd.pth in {hub} or pass model.pretrained=false")
    # through instantiate() and the CLI: our message alone, exit 2
    code = cli.main(["train", "model=resnet18", "model.pretrained=true", "data=fake", *TINY,
                     f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_root={tmp_path / 'data'}"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"softloss: error: {info.value}\n"
    assert not (tmp_path / "run").exists()  # refused before training: nothing written (docs/faults.md)
