"""End-to-end runs of the real ``softloss train`` on tiny settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def test_single_run_writes_the_run_directory(tiny_train):
    proc, run_dir = tiny_train("trainer.epochs=2", "trainer.progress=plain")
    assert "final metrics" in proc.stdout and str(run_dir) in proc.stdout
    assert "epoch 2/2" in proc.stdout
    for path in (".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/last.pt", "checkpoints/best.pt",
                 "metrics.json", "history.jsonl", "status.json", "predictions/val.npz", "predictions/test.npz"):
        assert (run_dir / path).exists(), path
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not list(run_dir.rglob("*.tmp"))

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        for name in ("accuracy", "nll", "brier", "ece", "topk_acc_k2", "topk_acc_k3", "topk_acc_k5",
                     "mean_max_prob", "mean_entropy"):
            value = metrics[f"{split}/{name}"]
            assert isinstance(value, float) and np.isfinite(value)
    assert all(key.count("/") == 1 for key in metrics)

    test = np.load(run_dir / "predictions/test.npz")
    assert test["logits"].dtype == np.float32 and test["logits"].shape == (128, 30)
    assert test["targets"].shape == (128,)
    # metrics.json holds the numbers of the saved predictions
    acc = float((test["logits"].argmax(1) == test["targets"]).mean())
    assert acc == pytest.approx(metrics["test/accuracy"])

    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert "val/accuracy" in history[0] and "train/epoch_loss" in history[0]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"


def test_same_config_gives_identical_metrics_on_cpu(tiny_train, tmp_path):
    _, first = tiny_train("seed=3", run_dir=tmp_path / "a")
    _, second = tiny_train("seed=3", run_dir=tmp_path / "b")
    _, other = tiny_train("seed=4", run_dir=tmp_path / "c")
    a, b, c = (json.loads((d / "metrics.json").read_text()) for d in (first, second, other))
    assert a == b
    assert a != c


def test_two_heads_write_aux_logits(tiny_train):
    _, run_dir = tiny_train("model.heads=two")
    assert np.load(run_dir / "predictions/val.npz")["aux_logits"].shape == (128, 30)


def test_multirun_of_two_jobs(tmp_path, data_root):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train", "-m", *TINY, f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep_dir}", "seed=0,1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sweep: 2/2 jobs ok" in proc.stdout
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "status.json").read_text())["status"] == "ok"
        assert (sweep_dir / job / "metrics.json").exists()
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [j["overrides"][-1] for j in sweep["jobs"]] == ["seed=0", "seed=1"]


def test_digits_with_mlp_learns(tiny_train):
    _, run_dir = tiny_train("data=digits", "model=mlp", "trainer.epochs=15", "optim.lr=0.05", sized_data=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/accuracy"] > 0.85
