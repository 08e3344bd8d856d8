"""``softloss report``: finding runs, grouping minus the seed, mean ± std (n), best per column
by direction, failed runs listed, report.csv / report.md / plots, and its one-line errors.

Runs are written by hand here (the files a run directory holds), so every number in the
table can be checked against a reference computed in the test. The end-to-end report of a
real sweep is in ``test_sweep.py``.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from softloss_cli.commands import report
from softloss_cli.errors import SoftlossError


def make_run(folder: Path, overrides: list[str], metrics: dict | None, status: str = "ok", reason: str = "",
             history: list[dict] | None = None, kind: str | None = None, data: str = "ordinal_images") -> Path:
    """A run directory as softloss writes it (only the files report reads)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({
        "seed": 0, "data": {"name": data, "batch_size": 256}, "optim": {"lr": 0.05},
        "loss": {"_target_": "softloss_cli.losses.CrossEntropyLoss"}}))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"loss": "ce", "data": data, "model": "small_cnn"}}}}))
    (folder / "status.json").write_text(json.dumps({"status": status, "reason": reason, "overrides": overrides,
                                                    "wall_s": 1.0}))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    if history:
        (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if kind:
        (folder / "task.json").write_text(json.dumps({"kind": kind}))
    return folder


def _ordinal_metrics(acc: float, mae: float) -> dict:
    return {"test/accuracy": acc, "test/mae": mae, "test/qwk": 0.5, "val/accuracy": acc + 0.01, "val/mae": mae}


@pytest.fixture
def sweep(tmp_path):
    """A sweep of loss=ce,rps x seed=0,1,2 where rps seed 2 failed; each run has a history."""
    root = tmp_path / "multirun"
    values = {("ce", 0): (0.50, 2.0), ("ce", 1): (0.54, 1.8), ("ce", 2): (0.49, 2.2),
              ("rps", 0): (0.46, 1.5), ("rps", 1): (0.47, 1.4)}
    job = 0
    for loss in ("ce", "rps"):
        for seed in range(3):
            overrides = [f"loss={loss}", f"seed={seed}", "trainer.epochs=2", f"paths.data_root=/tmp/d{seed}"]
            if (loss, seed) in values:
                acc, mae = values[(loss, seed)]
                history = [{"epoch": e, "step": 10 * (e + 1), "train/epoch_loss": 3.0 - e - seed * 0.1,
                            "val/accuracy": acc - 0.1 + 0.1 * e, "val/mae": mae + 1 - e} for e in range(2)]
                make_run(root / str(job), overrides, _ordinal_metrics(acc, mae), history=history, kind="ordinal")
            else:
                make_run(root / str(job), overrides, None, status="failed", reason="invalid config: boom")
            job += 1
    return root, values


def test_groups_by_overrides_minus_seed_with_mean_std_n(sweep):
    root, values = sweep
    runs = [report.load_run(p) for p in report.find_run_dirs([root])]
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "4", "5"]
    metrics = report.select_metrics(None, runs, "test")
    assert metrics == ["test/accuracy", "test/mae", "test/qwk"]  # ordinal headline metrics present in the runs
    rep = report.build_report(runs, metrics, None, [root])
    assert [g.label for g in rep.groups] == ["loss=ce", "loss=rps"]
    assert rep.common == {"trainer.epochs": "2"}  # paths.* and seed never define a group
    for group, loss in zip(rep.groups, ("ce", "rps")):
        accs = [v[0] for (name, _), v in values.items() if name == loss]
        s = group.stats["test/accuracy"]
        assert s.n == len(accs)
        assert s.mean == pytest.approx(statistics.fmean(accs), abs=1e-15)
        assert s.std == pytest.approx(statistics.stdev(accs), abs=1e-15)
    # accuracy: higher is better (ce); mae: lower is better (rps); qwk ties: the first group
    assert rep.best == {"test/accuracy": 0, "test/mae": 1, "test/qwk": 0}
    assert rep.direction == {"test/accuracy": "higher", "test/mae": "lower", "test/qwk": "higher"}
    assert [r.path.name for r in rep.failed] == ["5"]


def test_cells_and_single_runs():
    assert report.cell(report.Stat(0.5, 0.25, 3)) == "0.5000 ± 0.2500 (3)"
    assert report.cell(report.Stat(2.0, None, 1)) == "2.0000 (1)"
    assert report.cell(None) == "-"
    assert report.stat([1.0, float("nan"), 3.0]) == report.Stat(2.0, pytest.approx(2 ** 0.5), 2)
    assert report.stat([float("nan")]) is None


def test_main_writes_csv_markdown_and_plots(sweep, capsys):
    root, values = sweep
    assert report.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "loss=ce" in out and "loss=rps" in out and "failed: invalid config: boom" in out

    rows = list(csv.DictReader((root / "report.csv").open()))
    assert [r["group"] for r in rows] == ["loss=ce", "loss=rps"]
    assert [r["loss"] for r in rows] == ["ce", "rps"]
    assert [(r["runs_ok"], r["runs_total"]) for r in rows] == [("3", "3"), ("2", "3")]
    rps_mae = [v[1] for (name, _), v in values.items() if name == "rps"]
    assert float(rows[1]["test/mae_mean"]) == pytest.approx(statistics.fmean(rps_mae), abs=1e-15)
    assert float(rows[1]["test/mae_std"]) == pytest.approx(statistics.stdev(rps_mae), abs=1e-15)
    assert rows[1]["test/mae_n"] == "2"

    md = (root / "report.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| group"))
    assert header == "| group | runs | test/accuracy ↑ | test/mae ↓ | test/qwk ↑ |"
    ce_row = next(line for line in lines if line.startswith("| loss=ce"))
    rps_row = next(line for line in lines if line.startswith("| loss=rps"))
    ce_acc = report.cell(report.stat([v[0] for (name, _), v in values.items() if name == "ce"]))
    assert f"**{ce_acc}**" in ce_row  # best accuracy in bold
    assert f"**{report.cell(report.stat(rps_mae))}**" in rps_row  # best (lowest) MAE in bold
    assert "## Runs that did not finish" in md and "`5` **failed**: invalid config: boom" in md

    plots = sorted(p.name for p in (root / "plots").iterdir())
    assert plots == ["bar_test_accuracy.png", "bar_test_mae.png", "bar_test_qwk.png", "curve_train_epoch_loss.png",
                     "curve_val_accuracy.png", "curve_val_mae.png"]
    for name in plots:
        assert (root / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in md


def test_group_by_metrics_globs_out_dir_and_no_plots(sweep, tmp_path, capsys):
    root, _ = sweep
    out = tmp_path / "elsewhere"
    assert report.main([str(root / "0"), str(root / "3"), "--group-by", "loss,data", "--metrics", "accuracy,val/*",
                        "--out", str(out), "--no-plots"]) == 0
    rows = list(csv.DictReader((out / "report.csv").open()))
    # loss=... from the overrides; data from Hydra's group choices (it was never overridden)
    assert [r["group"] for r in rows] == ["loss=ce data=ordinal_images", "loss=rps data=ordinal_images"]
    assert [k for k in rows[0] if k.endswith("_mean")] == ["test/accuracy_mean", "val/accuracy_mean", "val/mae_mean"]
    assert not (out / "plots").exists()
    # a config path works as a key too
    assert report.main([str(root), "--group-by", "optim.lr", "--no-plots"]) == 0
    assert [r["group"] for r in csv.DictReader((root / "report.csv").open())] == ["optim.lr=0.05"]
    # one run: its report goes to RUN/report, apart from the run's own files (plots/test_*.png)
    assert report.main([str(root / "0"), "--no-plots"]) == 0
    assert (root / "0" / "report" / "report.csv").is_file() and not (root / "0" / "report.csv").exists()
    assert not any(p.name == "report" for p in report.find_run_dirs([root]))  # the report folder is no run


def test_default_metrics_follow_the_task_kind(tmp_path):
    mc = make_run(tmp_path / "a", ["loss=ce"], {"test/accuracy": 0.5, "test/nll": 1.0, "test/ece": 0.1,
                                                 "test/brier": 0.3}, data="digits")
    ml = make_run(tmp_path / "b", ["loss=bce"], {"test/map": 0.5, "test/f1_micro": 0.4, "test/accuracy": 0.1},
                  data="multilabel_shapes")
    assert report.select_metrics(None, [report.load_run(mc)], "test") == ["test/accuracy", "test/nll", "test/ece"]
    run = report.load_run(ml)
    assert run.kind == "multilabel"  # inferred from the metric names (no task.json)
    assert report.select_metrics(None, [run], "test") == ["test/map", "test/f1_micro"]
    # no headline metric on val: the first metrics of that split
    assert report.select_metrics(None, [report.load_run(ml)], "val") == []


def test_scenario_datasets_and_partial_tasks_get_their_own_columns(tmp_path):
    routing = make_run(tmp_path / "r", ["loss=ce"], {"test/accuracy": 0.9, "test/hard_route_acc": 0.8,
                                                     "test/nll": 0.3}, data="routing_images")
    partial = make_run(tmp_path / "p", ["loss=nl"], {"test/accuracy": 0.9, "test/nll": 0.3,
                                                     "train/neg_violation_rate": 0.1}, data="digits")
    assert report.select_metrics(None, [report.load_run(routing)], "test") == ["test/accuracy", "test/hard_route_acc"]
    assert report.select_metrics(None, [report.load_run(partial)], "test") == [
        "test/accuracy", "test/nll", "train/neg_violation_rate"]


def test_unfinished_and_ok_without_metrics_are_listed(tmp_path, capsys):
    make_run(tmp_path / "0", ["loss=ce", "seed=0"], {"test/accuracy": 0.5})
    make_run(tmp_path / "1", ["loss=ce", "seed=1"], None, status="running")
    make_run(tmp_path / "2", ["loss=ce", "seed=2"], None, status="ok")
    make_run(tmp_path / "3", ["loss=ce", "seed=3"], {"test/accuracy": 0.1}, status="diverged",
             reason="non-finite loss at epoch 2, step 8")
    runs = [report.load_run(p) for p in report.find_run_dirs([tmp_path])]
    rep = report.build_report(runs, ["test/accuracy"], None, [tmp_path])
    assert [g.label for g in rep.groups] == ["all runs"]
    assert rep.groups[0].stats["test/accuracy"] == report.Stat(0.5, None, 1)  # only the ok run counts
    assert {r.path.name: r.status for r in rep.failed} == {"1": "running", "2": "failed", "3": "diverged"}
    assert "killed" in rep.failed[0].reason and rep.failed[1].reason == "status ok but no metrics.json"


def test_nested_folders_and_natural_order(tmp_path):
    for job in (10, 9, 2):
        make_run(tmp_path / "sweepA" / str(job), [f"seed={job}"], {"test/accuracy": job / 10})
    make_run(tmp_path / "single" / "2026-11-22_10-00-00", ["loss=ce"], {"test/accuracy": 0.3})
    found = report.find_run_dirs([tmp_path])
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in found] == [
        "single/2026-11-22_10-00-00", "sweepA/2", "sweepA/9", "sweepA/10"]


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}/nope"], "{tmp}/nope does not exist: pass a run directory or a folder of runs"),
    (["{tmp}"], "no run directories under {tmp}"),
    (["{run}", "--metrics", "nope"], "no run has metric 'test/nope'; metrics of these runs: test/accuracy"),
    (["{run}", "--split", "train"], "report: argument --split: invalid choice: 'train'"),
    ([], "report: the following arguments are required: PATH"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    run = make_run(tmp_path / "run", ["loss=ce"], {"test/accuracy": 0.5})
    fill = {"tmp": tmp_path / "empty", "run": run}
    args = [a.format(**fill) for a in args]
    with pytest.raises(SoftlossError) as info:
        report.main(args)
    assert str(info.value).startswith(message.format(**fill))
    assert "\n" not in str(info.value)


def test_cli_report_help_is_fast_and_imports_no_torch(cli):
    code = ("import sys\nfrom softloss_cli.cli import main\ntry:\n    main(['report', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\nprint('CHECKED')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--group-by" in proc.stdout and "--metrics" in proc.stdout and "CHECKED" in proc.stdout


def test_cli_report_bad_path_exit_2(cli, tmp_path):
    proc = cli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"softloss: error: {tmp_path / 'nope'} does not exist: pass a run directory or a folder of runs "
        "(e.g. runs/multirun/...)"]


def test_run_summary_keeps_to_headline_metrics_when_there_are_many(capsys, tmp_path):
    from softloss_cli.runs.summary import MAX_ROWS, print_run_summary, summary_names

    few = {f"{s}/{n}": 0.5 for s in ("val", "test") for n in ("accuracy", "nll", "mae")}
    assert summary_names(few, "ordinal") == ["accuracy", "mae", "nll"]
    many = {**few, **{f"{s}/avgk_acc_k{k}_{i}": 0.1 for s in ("val", "test") for k in (1, 2) for i in range(MAX_ROWS)}}
    assert summary_names(many, "multiclass") == ["accuracy", "nll"]  # ece, mean_max_prob absent
    assert summary_names(many, "multiclass", "ambiguous_images") == ["accuracy"]
    print_run_summary(many, tmp_path, kind="multiclass")
    out = capsys.readouterr().out
    assert "avgk_acc_k1_0" not in out and f"{2 * MAX_ROWS + 1} more metrics in" in out
    print_run_summary(many, tmp_path, compact=True, kind="multiclass")
    assert capsys.readouterr().out.startswith("done: accuracy 0.5000, nll 0.5000  ->")


LONG = ("test/avgk_macro_acc_k3", "test/avgk_oracle_gap_k2", "test/avgk_set_size_k2", "test/avgk_acc_k1",
        "test/avgk_acc_k2", "test/avgk_acc_k3", "test/avgk_acc_k5")


def _long_report(tmp_path):
    root = tmp_path / "wide"
    for job, loss in enumerate(["ce", "two_head", "bce_wan"]):
        overrides = [f"loss={loss}", "data.negatives.fraction=0.25", "model.heads=two"]
        make_run(root / str(job), overrides, {m: 0.123456 * (job + 1) for m in LONG}, kind="multiclass",
                 data="ambiguous_images")
    return root


@pytest.mark.parametrize("columns", [60, 100])
def test_report_headers_are_never_cut_on_a_narrow_terminal(tmp_path, capsys, monkeypatch, columns):
    monkeypatch.setattr("softloss_cli.progress.is_terminal", lambda stream=None: True)
    monkeypatch.setenv("COLUMNS", str(columns))
    root = _long_report(tmp_path)
    assert report.main([str(root), "--metrics", ",".join(LONG), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for name in LONG:  # the split is said once, in the title: headers are the bare names
        assert f" {name.split('/', 1)[1]} " in out
    assert "(columns 1-" in out  # too wide for one table: blocks of columns
    assert max(len(line) for line in out.splitlines() if not line.startswith("wrote ")) <= columns


def test_report_piped_is_one_plain_table_of_whole_lines(tmp_path):
    root = _long_report(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "softloss_cli", "report", str(root), "--metrics", ",".join(LONG),
                           "--no-plots"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("│ loss=")]
    assert len(rows) == 3 and "\x1b[" not in proc.stdout  # one line per group, no colour codes
    assert all(line.count("(1)") == len(LONG) for line in rows)
    assert "*0.3704 (1)" in rows[2] and rows[0].count("*") == 1  # ce: only the lowest oracle gap  # the best cell is marked without colour
    assert "* = best of its column" in proc.stdout
