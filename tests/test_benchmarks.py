"""The benchmarks run (tiny sizes): the bare loop trains exactly what the runner trains, every
section produces its table, and the GPU benchmark's code path works on the CPU, so none of
it rots on machines where nobody runs ``make bench``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu  # noqa: E402
import loss_cost  # noqa: E402
import loss_step  # noqa: E402
import metrics_scale  # noqa: E402
import overhead  # noqa: E402

RUN_ALL = [sys.executable, str(REPO / "benchmarks" / "run_all.py")]


@pytest.mark.slow
def test_bare_loop_trains_what_the_runner_trains(data_root):
    """Same tensors, init, order, optimiser and schedule: the same validation accuracy, so the
    overhead ratio compares equal work."""
    m = overhead.measure({**overhead.CPU, **overhead.QUICK}, 1, data_root)
    pair = m["pairs"][0]
    assert m["same_result"], pair
    assert 0 < pair["bare_val_acc"] < 1 and pair["bare_s"] > 0 and pair["runner_s"] > 0


@pytest.mark.slow
def test_run_all_quick_writes_the_report(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([*RUN_ALL, "--quick", "--only", "startup,loss,gpu", "--gpu", "off", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for heading in ("# softloss benchmarks", "## Targets at a glance", "## Start-up", "## Loss cost", "## GPU path"):
        assert heading in text
    assert "| torch |" in text and "| commit |" in text and "| cpu |" in text
    assert "Not measured in this session" in text  # no GPU figure is ever made up
    assert "`softloss train loss=nope`" in text and "`ce`" in text


def test_run_all_refuses_fewer_than_five_repeats_and_unknown_sections():
    proc = subprocess.run([*RUN_ALL, "--repeats", "3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "error: --repeats must be at least 5 (figures are medians of at least 5 repeats)")
    proc = subprocess.run([*RUN_ALL, "--only", "startup,warp"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "error: unknown section(s) warp; choose from startup, loss, step, metrics, overhead, own_data, gpu")


def test_loss_cost_covers_every_shipped_loss():
    losses = loss_cost.loss_choices()
    shipped = {p.stem for p in (REPO / "softloss_cli" / "configs" / "loss").glob("*.yaml")}
    assert shipped <= set(losses) and "ce" in losses
    results = loss_cost.measure("cpu", repeats=5, classes=(7,), batch=32, names={"ce", "rps"})
    assert results["ce"][7]["auto"]["ratio"] > 0 and results["ce"][7]["auto"]["path"] == "plain torch"
    # the auto path: rps's CPU kernel where it builds (else eager: a small input is not compiled)
    from softloss_cli.losses import kernels

    assert results["rps"][7]["auto"]["path"] == ("kernel" if kernels.available() else "eager")
    assert results["rps"][7]["off"]["path"] == "eager"
    table, _ = loss_cost.render(results, (7,), "cpu")
    assert "| `rps` |" in table and "eager" in table


def test_loss_cost_reads_configs_without_hydra(monkeypatch):
    """The GPU machine has torch but not Hydra: the loss configs are read with PyYAML there."""
    import builtins

    real_import = builtins.__import__

    def no_hydra(name, *args, **kwargs):
        if name.split(".")[0] in ("hydra", "omegaconf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hydra)
    loss, target = loss_cost.instantiate_config(REPO / "softloss_cli" / "configs" / "loss" / "cdw_ce.yaml")
    assert target == "softloss_cli.losses.ClassDistanceWeightedCELoss" and loss.alpha == 1.0


def test_loss_step_measures_every_loss_relative_to_ce():
    m = loss_step.measure("cpu", quick=True, names={"ce", "rps", "two_head", "nl", "bce"})
    assert set(m["losses"]) == {"ce", "rps", "two_head", "nl", "bce"}
    assert all(isinstance(r, dict) and r["ratio"] > 0 for r in m["losses"].values()), m["losses"]
    assert m["losses"]["ce"]["ratio"] == 1.0
    table, _ = loss_step.render(m)
    assert "| `two_head` |" in table


def test_fold_device_replaces_the_gpu_blocks(tmp_path):
    import fold_device

    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# x\n<!-- device:loss -->\nnot measured\n<!-- /device:loss -->\n"
                     "<!-- device:step -->\nnot measured\n<!-- /device:step -->\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text('{"device": "NVIDIA H200", "torch": "2.11", "triton": "3.6"}')
    (run / "loss.md").write_text("| loss | C = 30 |\n|---|---|\n| `ce` | 1.00x |\n")
    assert fold_device.main([str(run), "--benchmarks", str(bench)]) == 0
    text = bench.read_text()
    assert "NVIDIA H200" in text and "| `ce` | 1.00x |" in text
    assert text.count("not measured") == 1  # the step block: not in this run, left as it was


@pytest.mark.parametrize("case", sorted(metrics_scale.CASES))
def test_metrics_scale_cases_run(case):
    result = metrics_scale.one(case, repeats=1, quick=True)
    assert "error" not in result, result
    assert result["seconds"] >= 0 and result["scores_mb"] > 0 and result["n"] == metrics_scale.QUICK_N


@pytest.mark.slow
def test_gpu_benchmark_code_runs_on_the_cpu(tmp_path):
    m = gpu.measure("cpu", quick=True, settings=gpu.SETTINGS[:1], data_root=tmp_path)
    row = m["rows"][0]
    assert "error" not in row, row
    assert row["runner"] > 0 and row["bare"] > 0 and len(row["runner_epochs"]) == gpu.QUICK["epochs"]
    text = gpu.render(m)
    assert "Best setting: fp32" in text and "Waiting for data" in text


@pytest.mark.parametrize("runner_s, words", [(31.0, "under 1.05x for runs over"),
                                              (29.5, "below this run's noise")])
def test_overhead_text_reads_right_for_a_positive_and_a_negative_fixed_cost(monkeypatch, tmp_path, runner_s, words):
    """A runner faster than the bare loop in one run (noise) gives no "runs over -19 s"."""
    def fake_measure(c, repeats, data_root):
        pairs = [{"bare_s": 30.0, "runner_s": runner_s, "ratio": runner_s / 30.0, "bare_epoch_rates": [1000.0] * 3}]
        return {"config": c, "pairs": pairs, "ratio": runner_s / 30.0, "ratio_spread": "-", "epoch_ratio": 1.0,
                "cpu_ratio": 1.0, "bare_s": 30.0, "runner_s": runner_s, "same_result": True}

    monkeypatch.setattr(overhead, "measure", fake_measure)
    text = overhead.run(5, quick=True, data_root=tmp_path).markdown
    assert words in text and "over -" not in text
