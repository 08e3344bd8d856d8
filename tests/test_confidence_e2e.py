"""End-to-end runs of the real CLI for the confidence and negatives scenarios (slow).

Tiny sizes, one or two epochs, CPU; each test checks the run directory, the metric keys,
and for bad input the one-line message and the exit code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CPU = ["trainer.device=cpu", "trainer.precision=fp32", "trainer.progress=none"]
ROUTING_TINY = [*CPU, "experiment=confidence", "data.train_size=256", "data.val_size=128", "data.test_size=128",
                "data.batch_size=64", "trainer.epochs=1", "model.channels=[8,16]", "model.expert_hidden=16"]
DIGITS = [*CPU, "data=digits", "trainer.epochs=2"]
GATE_KEYS = {"decisive_share_90", "decisive_share_99", "mean_max_prob", "mean_entropy", "gate_decisive_share_90",
             "gate_decisive_share_99", "gate_mean_max_prob", "gate_mean_entropy", "soft_route_acc",
             "hard_route_acc", "hard_route_gap", "route_agreement", "route_active_experts", "route_purity", "ece",
             "accuracy"}


def _error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, never a traceback
    return lines[0]


# --------------------------------------------------------------------------- confidence


def test_confidence_run_reports_gate_and_route_metrics(cli, data_root, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *ROUTING_TINY, "gate=qq_penalty", f"paths.data_root={data_root}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    for name in (".hydra/config.yaml", "metrics.json", "status.json", "history.jsonl", "checkpoints/last.pt",
                 "checkpoints/best.pt", "predictions/val.npz", "predictions/test.npz"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert {f"{split}/{k}" for k in GATE_KEYS} <= set(metrics)
    assert metrics["test/soft_route_acc"] == metrics["test/accuracy"]
    assert metrics["test/hard_route_gap"] == pytest.approx(metrics["test/soft_route_acc"] - metrics["test/hard_route_acc"])
    assert 1.0 <= metrics["test/route_active_experts"] <= 4.0
    with np.load(run / "predictions" / "test.npz") as npz:
        assert npz["gate_logits"].shape == (128, 4) and npz["hard_logits"].shape == (128, 8)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and "val/gate_mean_entropy" in history[0]
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    resolved = (run / ".hydra" / "overrides.yaml").read_text()
    assert "gate=qq_penalty" in resolved


def test_gumbel_router_trains_end_to_end(cli, data_root, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *ROUTING_TINY, "gate=gumbel_st", "trainer.epochs=2", f"paths.data_root={data_root}",
               f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert {f"test/{k}" for k in GATE_KEYS} <= set(metrics)
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "gate: gumbel_st" in config


def test_confidence_sweep_runs_each_treatment(cli, data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", *ROUTING_TINY, "gate=none,temperature", "seed=0", "data.train_size=128",
               f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((sweep / "sweep.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "ok"]
    assert {o for j in summary["jobs"] for o in j["overrides"] if o.startswith("gate=")} == {"gate=none", "gate=temperature"}
    for job in summary["jobs"]:
        assert "test/gate_mean_entropy" in json.loads((sweep / job["job"] / "metrics.json").read_text())


# --------------------------------------------------------------------------- negatives


def test_nl_run_scores_the_training_negatives(cli, data_root, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *DIGITS, "loss=nl", "data.negatives.fraction=0.5", "trainer.grad_clip=1.0", f"paths.data_root={data_root}",
               f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"train/neg_violation_rate", "train/neg_violation_prob", "train/pos_accuracy", "train/logit_gap",
            "val/accuracy", "test/accuracy", "test/ece"} <= set(metrics)
    assert metrics["test/accuracy"] > 0.5  # learns digits from half the labels in two epochs
    assert metrics["train/neg_violation_rate"] < 0.1
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2
    with np.load(run / "predictions" / "val.npz") as npz:
        assert npz["targets"].ndim == 1  # val keeps its true labels


def test_nl_without_gradient_clipping_is_warned_about(cli, data_root, tmp_path):
    proc = cli("train", *CPU, "data=digits", "trainer.epochs=1", "loss=nl", "data.negatives.fraction=0.5",
               f"paths.data_root={data_root}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "without gradient clipping" in line]
    assert warning == [warning[0]] and warning[0].startswith("softloss: warning: loss=nl without gradient clipping")
    assert "trainer.grad_clip=1.0" in warning[0]


def test_negated_ce_run_shows_the_damage(cli, data_root, tmp_path):
    """Realistic settings: the loss falls without bound; the run either ends 'diverged'
    (non-finite) or finishes with exploded logits and chance-level accuracy."""
    run = tmp_path / "run"
    proc = cli("train", *DIGITS, "trainer.epochs=3", "optim.lr=0.5", "loss=negated_ce", "data.negatives.fraction=0.75",
               "eval.checkpoint=last", f"paths.data_root={data_root}", f"hydra.run.dir={run}")
    status = json.loads((run / "status.json").read_text())
    if proc.returncode == 3:  # non-finite, or finite but blown up (train/divergence.py)
        line = _error_line(proc)
        assert status["status"] == "diverged" and ("non-finite loss" in line or "the run diverged" in line)
        return
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/logit_gap"] > 1e3
    assert metrics["test/accuracy"] < 0.3
    losses = [json.loads(line)["train/epoch_loss"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert losses[-1] < -100 and losses[-1] < losses[0]


def test_diverging_run_is_a_clean_recorded_failure(cli, data_root, tmp_path):
    run = tmp_path / "run"
    proc = cli("train", *DIGITS, "loss=negated_ce", "loss.neg_weight=1e30", "data.negatives.fraction=0.5",
               f"paths.data_root={data_root}", f"hydra.run.dir={run}")
    assert proc.returncode == 3
    line = _error_line(proc)
    assert line.startswith("softloss: error: non-finite loss at epoch 1, step ")
    assert line.endswith("the last good checkpoint is none (first epoch)")
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged" and status["reason"] == line.removeprefix("softloss: error: ")
    assert not (run / "metrics.json").exists()


def test_sweep_records_the_divergence_and_goes_on(cli, data_root, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train", "-m", *DIGITS, "trainer.epochs=1", "loss=negated_ce,positives_only", "++loss.neg_weight=1e30",
               "data.negatives.fraction=0.5", f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["diverged", "ok"]
    assert "non-finite loss" in jobs[0]["reason"]
    assert "train/neg_violation_rate" in json.loads((sweep / "1" / "metrics.json").read_text())
    assert "sweep: 1/2 jobs ok" in proc.stdout


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("overrides,message,code", [
    (["data=digits", "loss=ce", "data.negatives.fraction=0.5"],
     "softloss: error: loss=ce does not fit data=digits (task kind 'partial'); losses for partial data: "
     "negated_ce, nl, positives_only", 2),
    (["data=digits", "loss=nl"], "softloss: error: loss=nl does not fit data=digits (task kind 'multiclass');", 2),
    (["data=digits", "loss=nl", "data.negatives.fraction=1.5"],
     "softloss: error: data.negatives.fraction must be in [0, 1], got 1.5", 2),
    (["data=digits", "loss=nl", "data.negatives.fraction=0.5", "data.negatives.strategy=nearest"],
     "softloss: error: data.negatives.strategy must be one of random, confusable, got 'nearest'", 2),
    (["data=routing_images", "data.num_families=9"],
     "softloss: error: data.num_families=9 must be <= data.num_classes=8", 2),
    (["data=routing_images", "model=routed_experts", "model.router=topk"],
     "model.router must be one of softmax, gumbel_st, got 'topk'", 2),
    (["experiment=confidence", "gate=bogus"], "Interpolation key 'gate_modes.bogus", 2),
])
def test_bad_input_gets_one_line_and_an_exit_code(cli, data_root, tmp_path, overrides, message, code):
    proc = cli("train", *CPU, "trainer.epochs=1", *overrides, f"paths.data_root={data_root}",
               f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == code, proc.stderr
    line = _error_line(proc)
    assert line.startswith("softloss: error: ") and message in line, line
