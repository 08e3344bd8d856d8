"""End-to-end ordinal runs of the real CLI: run directory, metrics, figures, sweeps and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, run_cli

ORDINAL_METRICS = ("mae", "mae_expected", "rps", "qwk", "off1_acc", "amae", "group8_sum_mae",
                   "group8_sum_mae_argmax")

pytestmark = pytest.mark.slow


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("softloss: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_rps_run_writes_ordinal_metrics_predictions_and_figures(tiny_train):
    proc, run = tiny_train("loss=rps", "data=ordinal_images", "trainer.monitor=val/mae")
    for path in (".hydra/config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.json",
                 "predictions/val.npz", "predictions/test.npz", "history.jsonl", "status.json"):
        assert (run / path).exists(), path
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        for name in ORDINAL_METRICS:
            value = metrics[f"{split}/{name}"]
            assert np.isfinite(value), (split, name)
        assert 0.0 <= metrics[f"{split}/rps"] <= 1.0
        assert -1.0 <= metrics[f"{split}/qwk"] <= 1.0
        assert metrics[f"{split}/off1_acc"] >= metrics[f"{split}/accuracy"]
    # the numbers in metrics.json are those of the stored predictions (recomputed here)
    pred = np.load(run / "predictions" / "test.npz")
    logits, targets = pred["logits"].astype(np.float64), pred["targets"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert metrics["test/mae"] == pytest.approx(np.abs(logits.argmax(axis=1) - targets).mean(), abs=1e-9)
    expected = probs @ np.arange(logits.shape[1])
    assert metrics["test/mae_expected"] == pytest.approx(np.abs(expected - targets).mean(), abs=1e-5)
    groups = (expected - targets)[: len(targets) // 8 * 8].reshape(-1, 8).sum(axis=1)
    assert metrics["test/group8_sum_mae"] == pytest.approx(np.abs(groups).mean(), abs=1e-4)
    # the MAE-per-class figure (plots/ordinal.py) and the generic confusion matrix reached TensorBoard
    events = b"".join(p.read_bytes() for p in (run / "tb").glob("events.out.tfevents.*"))
    assert b"test/mae_per_class" in events
    assert b"test/confusion_matrix" in events
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "ok"


def test_multirun_sweeps_ordinal_losses(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", *TINY, f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}",
                   "loss=ev_l1_ce,sord", "seed=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for job, loss in ((0, "ev_l1_ce"), (1, "sord")):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert {f"test/{name}" for name in ORDINAL_METRICS} <= set(metrics)
        assert f"- loss={loss}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text().splitlines()
    history = [json.loads(line) for line in (sweep / "0" / "history.jsonl").read_text().splitlines()]
    assert "val/mae" in history[-1]


def test_experiment_preset_runs_one_job_at_tiny_size(tmp_path, data_root):
    # the preset's sweep is replaced by one loss and one seed; its data/model/optim choices stay.
    run = tmp_path / "run"
    proc = run_cli("train", "experiment=ordinal", *TINY, f"paths.data_root={data_root}",
                   f"hydra.run.dir={run}", "loss=cdw_ce")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "_target_: torch.optim.SGD" in config and "monitor: val/mae" in config
    assert "train_size: 256" in config  # the command line wins over the preset's sizes
    assert "test/qwk" in json.loads((run / "metrics.json").read_text())


def test_ordinal_loss_on_multiclass_data_warns_and_trains(tmp_path, data_root):
    run = tmp_path / "run"
    no_sizes = [arg for arg in TINY if not arg.startswith("data.") or arg.startswith("data.batch_size")]
    proc = run_cli("train", *no_sizes, f"paths.data_root={data_root}", f"hydra.run.dir={run}",
                   "loss=rps", "data=digits")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "softloss: warning: loss=rps is an ordinal loss and data=digits is multiclass" in proc.stderr
    assert "UserWarning" not in proc.stderr  # one line, no file:line and source line
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/accuracy" in metrics and "test/mae" not in metrics  # ordinal metrics need ordinal data


def test_ordinal_loss_on_multilabel_data_is_refused_before_training(tiny_train):
    loss = "cdw_ce"
    proc, run = tiny_train(f"loss={loss}", "data=multilabel_shapes", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = _one_line_error(proc)
    assert f"loss={loss} does not fit data=multilabel_shapes (task kind 'multilabel'); losses for multilabel data:" in line
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


def test_label_values_not_increasing_is_one_line_exit_2(tiny_train):
    proc, run = tiny_train("loss=ev_l1", "loss.label_values=[0,2,1]", check=False)
    assert proc.returncode == 2, proc.stderr
    line = _one_line_error(proc)
    assert "label_values must be strictly increasing, got 2 then 1 at positions 1 and 2" in line
    assert not (run / "checkpoints").exists()


def test_label_values_of_the_wrong_length_is_one_line(tiny_train):
    proc, run = tiny_train("loss=sord", "loss.label_values=[0,1,2]", check=False)
    # Refused before training: the loop binds the task to the loss and reports a user error.
    assert proc.returncode == 2, proc.stderr
    line = _one_line_error(proc)
    assert "loss.label_values has 3 values but the data has 30 classes" in line
