"""``softloss report PATH...``: compare finished runs and sweeps.

Finds every run directory under the paths (single runs and multiruns, recursively: a
directory holding ``status.json``, ``metrics.json`` or ``.hydra/overrides.yaml``), groups
the runs by their overrides minus ``seed`` (or by ``--group-by`` keys), and prints one row
per group with ``mean ± std (n)`` over the group's successful runs for each metric, the
best cell of each column in bold (lower is better for mae, rps, ece, nll...: see
``softloss_cli.metrics.lower_is_better``). Writes ``report.csv``, ``report.md`` and
``plots/`` (a bar chart with error bars per metric, validation curves per group from each
run's ``history.jsonl``) next to the runs. Failed, diverged and unfinished runs are listed
under the table, never silently dropped.

Start-up stays light: argument parsing imports neither torch nor matplotlib; torch is
imported once a report is built (for the metric directions), matplotlib only for plots.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from softloss_cli.config.argparsing import command_parser
from softloss_cli.errors import SoftlossError
from softloss_cli.tasks import headline_metrics, infer_kind

#: metrics a split other than the report's split is the only source of (scored on train).
_TRAIN_ONLY = ("neg_violation_rate",)
#: overrides that never define a group: the seed, and where/how a run was written.
_IGNORED = re.compile(r"^(seed|hydra\..*|hydra/.*|paths\..*|trainer\.(progress|threads|log_every|device))$")

USAGE = "softloss report PATH [PATH ...] [--group-by KEYS] [--metrics NAMES] [--split test|val] [--out DIR] [--no-plots]"


# --------------------------------------------------------------------------- task kinds


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    status: str  # ok | failed | diverged | running | unknown
    reason: str = ""
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str | None = None
    data: str | None = None
    wall_s: float | None = None
    labels: str | None = None  # the user's own data: class order and label values (task.json)
    _config: dict | None = None
    _choices: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.metrics)

    def override_dict(self) -> dict[str, str]:
        out = {}
        for item in self.overrides:
            key, sep, value = item.partition("=")
            if sep:
                out[key.lstrip("+~")] = value
        return out

    def config(self) -> dict:
        if self._config is None:
            self._config = _read_yaml(self.path / ".hydra" / "config.yaml") or {}
        return self._config

    def choices(self) -> dict:
        """Hydra's group choices of the run (``loss: rps``...), from ``.hydra/hydra.yaml``."""
        if self._choices is None:
            hydra_cfg = _read_yaml(self.path / ".hydra" / "hydra.yaml") or {}
            self._choices = dict(((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {})
        return self._choices

    def value(self, key: str) -> str:
        """A key's value for grouping: an override, else a group choice, else a config value."""
        overrides = self.override_dict()
        if key in overrides:
            return overrides[key]
        choices = self.choices()
        if key in choices:
            return str(choices[key])
        node = self.config()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return "-"
            node = node[part]
        return _plain(node)

    def history(self) -> list[dict]:
        path = self.path / "history.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
        return records


def _plain(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _read_yaml(path: Path):
    if not path.exists():
        return None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(), Loader=loader)
    except yaml.YAMLError:
        return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _natural_key(path: Path):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t]


def _is_run_dir(path: Path) -> bool:
    return (path / "status.json").is_file() or (path / "metrics.json").is_file() or (
        path / ".hydra" / "overrides.yaml").is_file()


def find_run_dirs(paths) -> list[Path]:
    """Every run directory at or under ``paths`` (in natural order: job 10 after job 9)."""
    found: dict[Path, None] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise SoftlossError(f"{root} does not exist: pass a run directory or a folder of runs (e.g. runs/multirun/...)")
        if root.is_file():
            raise SoftlossError(f"{root} is a file: pass a run directory or a folder of runs")
        candidates = [root] if _is_run_dir(root) else []
        for marker in ("status.json", "metrics.json", ".hydra/overrides.yaml"):
            for hit in root.rglob(marker):
                run = hit.parent.parent if marker.startswith(".hydra") else hit.parent
                if ".hydra" not in run.parts:
                    candidates.append(run)
        for run in sorted(set(candidates), key=_natural_key):
            found[run.resolve()] = None
    return list(found)


def load_run(path: Path) -> Run:
    """A run's status, overrides, final metrics and task kind, from its files."""
    status = _read_json(path / "status.json") or {}
    metrics = _read_json(path / "metrics.json") or {}
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    overrides = status.get("overrides")
    if overrides is None:
        overrides = _read_yaml(path / ".hydra" / "overrides.yaml") or []
    state = status.get("status") or ("ok" if metrics else "unknown")
    reason = status.get("reason", "")
    if state == "ok" and not metrics:
        state, reason = "failed", "status ok but no metrics.json"
    if state == "running":
        reason = reason or "no outcome recorded: still running, or killed"
    task = _read_json(path / "task.json") or {}
    run = Run(path, state, reason, [str(o) for o in overrides], metrics,
              kind=task.get("kind"), wall_s=status.get("wall_s"), labels=task.get("labels"))
    data_cfg = run.config().get("data")
    run.data = data_cfg.get("name") if isinstance(data_cfg, dict) else None
    if run.kind is None and metrics:
        run.kind = infer_kind(metrics)
    return run


# --------------------------------------------------------------------------- grouping and statistics


@dataclass
class Stat:
    mean: float
    std: float | None  # sample standard deviation (n - 1); None for a single value
    n: int


@dataclass
class Group:
    label: str
    values: dict[str, str]  # the key -> value pairs that define the group
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)

    @property
    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.ok]


@dataclass
class Report:
    groups: list[Group]
    metrics: list[str]
    failed: list[Run]
    common: dict[str, str]
    keys: list[str]
    best: dict[str, int]  # metric -> index of the best group
    direction: dict[str, str]  # metric -> 'lower' | 'higher' | 'none' (descriptive, never marked best)
    roots: list[Path]


def stat(values: list[float]) -> Stat | None:
    """Mean, sample std (ddof 1) and count of the finite values (None when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    n = len(finite)
    mean = math.fsum(finite) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def group_runs(runs: list[Run], group_by: list[str] | None) -> tuple[list[Group], dict[str, str], list[str]]:
    """Groups in order of first appearance, the overrides common to all runs, and the key names.

    Default: the overrides minus the seed and the output/progress settings; only the keys
    whose values differ between runs name a group, the others are listed as common.
    """
    if group_by:
        keyed = [(tuple((k, r.value(k)) for k in group_by), r) for r in runs]
        keys, common = list(group_by), {}
    else:
        per_run = [{k: v for k, v in r.override_dict().items() if not _IGNORED.match(k)} for r in runs]
        all_keys: dict[str, None] = {}
        for d in per_run:
            all_keys.update(dict.fromkeys(d))
        varying = [k for k in all_keys if len({d.get(k) for d in per_run}) > 1]
        common = {k: per_run[0][k] for k in all_keys if k not in varying}
        keys = varying
        keyed = [(tuple((k, d.get(k, "-")) for k in varying), r) for d, r in zip(per_run, runs)]
    groups: dict[tuple, Group] = {}
    for key, run in keyed:
        if key not in groups:
            label = " ".join(f"{k}={v}" for k, v in key) or "all runs"
            groups[key] = Group(label, dict(key), [])
        groups[key].runs.append(run)
    return list(groups.values()), common, keys


def default_metrics(runs: list[Run], split: str) -> list[str]:
    """Headline metrics of the runs' task kinds (scenario datasets have their own), on ``split``,
    kept where at least one run has them; the first metrics of the runs when none is found."""
    available: dict[str, None] = {}
    for run in runs:
        available.update(dict.fromkeys(run.metrics))
    chosen: dict[str, None] = {}
    for run in runs:
        if not run.ok:
            continue
        for bare in headline_metrics(run.kind or "multiclass", run.data):
            name = f"train/{bare}" if bare in _TRAIN_ONLY else f"{split}/{bare}"
            if name in available:
                chosen[name] = None
    if not chosen:
        chosen = dict.fromkeys(sorted(n for n in available if n.startswith(f"{split}/"))[:6])
    return list(chosen)


def select_metrics(spec: str | None, runs: list[Run], split: str) -> list[str]:
    """``--metrics``: comma-separated names; bare names take ``split/``; globs (``avgk_*``) expand."""
    if not spec:
        return default_metrics(runs, split)
    available: dict[str, None] = {}
    for run in runs:
        available.update(dict.fromkeys(run.metrics))
    chosen: dict[str, None] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name = item if "/" in item else f"{split}/{item}"
        matches = [n for n in available if fnmatch.fnmatchcase(n, name)] if any(c in name for c in "*?[") else (
            [name] if name in available else [])
        if not matches:
            close = sorted(n for n in available if n.startswith(f"{split}/"))
            raise SoftlossError(f"no run has metric '{name}'; metrics of these runs: {', '.join(close) or 'none'}")
        chosen.update(dict.fromkeys(sorted(matches) if len(matches) > 1 else matches))
    return list(chosen)


def build_report(runs: list[Run], metrics: list[str], group_by: list[str] | None, roots: list[Path]) -> Report:
    from softloss_cli.metrics import metric_direction  # imports torch: only once there is a report to build

    groups, common, keys = group_runs(runs, group_by)
    direction = {m: metric_direction(m) for m in metrics}
    best: dict[str, int] = {}
    for group in groups:
        for m in metrics:
            s = stat([r.metrics[m] for r in group.ok_runs if m in r.metrics])
            if s is not None:
                group.stats[m] = s
    if len(groups) > 1:
        for m in metrics:
            scored = [(g.stats[m].mean, i) for i, g in enumerate(groups) if m in g.stats]
            if len(scored) > 1 and direction[m] != "none":
                best[m] = (min(scored) if direction[m] == "lower" else max(scored, key=lambda t: (t[0], -t[1])))[1]
    failed = [r for r in runs if not r.ok]
    return Report(groups, metrics, failed, common, keys, best, direction, roots)


# --------------------------------------------------------------------------- output


def _number(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.1f}"


def cell(s: Stat | None) -> str:
    """``mean ± std (n)``; ``mean (1)`` for a single run; ``-`` when no run has the metric."""
    if s is None:
        return "-"
    if s.std is None:
        return f"{_number(s.mean)} (1)"
    return f"{_number(s.mean)} ± {_number(s.std)} ({s.n})"


def _arrow(report: Report, m: str) -> str:
    return {"lower": "↓", "higher": "↑"}.get(report.direction[m], "")


def _rel(path: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            rel = path.relative_to(root.resolve())
            return str(rel) if str(rel) != "." else path.name
        except ValueError:
            continue
    return str(path)


def _runs_line(report: Report) -> str:
    total = sum(len(g.runs) for g in report.groups)
    ok = total - len(report.failed)
    return f"{total} runs: {ok} ok, {len(report.failed)} not ok"


def metric_headers(report: Report) -> tuple[list[str], str]:
    """Column headers of the metrics, and the split they share (``""`` when they do not).

    When every metric is of one split (``test/mae``, ``test/rps``...) the headers drop it
    (``mae ↓``) and the title names it once: narrower columns, so more of them fit a line.
    """
    splits = {m.split("/", 1)[0] for m in report.metrics if "/" in m}
    shared = splits.pop() if len(splits) == 1 and all("/" in m for m in report.metrics) else ""
    names = [m.split("/", 1)[1] if shared else m for m in report.metrics]
    return [f"{n} {_arrow(report, m)}".rstrip() for n, m in zip(names, report.metrics)], shared


def column_blocks(widths: list[int], fixed: int, available: int) -> list[list[int]]:
    """Metric columns (their widths) in consecutive blocks that each fit ``available``
    characters next to the ``fixed`` columns (group, runs); a column wider than that alone
    gets a block of its own. Each block is printed as its own table, as pandas wraps a wide
    frame: no header or cell is ever cut."""
    blocks: list[list[int]] = [[]]
    used = fixed
    for i, w in enumerate(widths):
        if blocks[-1] and used + w > available:
            blocks.append([])
            used = fixed
        blocks[-1].append(i)
        used += w
    return blocks if blocks[0] else []


def print_report(report: Report) -> None:
    """The report's table on stdout: never a cut header or cell.

    On a terminal the metric columns come in blocks that fit its width (the group and runs
    columns repeated in each); piped or redirected, one table of any width, plain text, no
    line wrapped (a log or ``grep`` gets whole rows).
    """
    from rich.table import Table

    from softloss_cli.progress import console as plain_console
    from softloss_cli.progress import is_terminal

    terminal = is_terminal()
    console = plain_console()
    headers, split = metric_headers(report)
    cells = [[cell(g.stats.get(m)) for m in report.metrics] for g in report.groups]
    # width of a column in the table: its text plus rich's padding and border (3 characters)
    widths = [max([len(h)] + [len(row[j]) + 1 for row in cells]) + 3 for j, h in enumerate(headers)]
    label_width = max([len("group")] + [len(g.label) for g in report.groups]) + 3
    fixed = min(label_width, 40) + len("runs") + 3 + 1
    blocks = column_blocks(widths, fixed, console.width if terminal else 10**9) or [[]]
    title = f"softloss report ({_runs_line(report)})" + (f", {split} split" if split else "")
    for b, block in enumerate(blocks):
        more = f" (columns {block[0] + 1}-{block[-1] + 1} of {len(headers)})" if len(blocks) > 1 and block else ""
        table = Table(title=title + more, title_justify="left",
                      caption="mean ± std (n) over the runs of each group; "
                              + ("bold" if terminal else "*") + " = best of its column"
                      if b == len(blocks) - 1 else None)
        table.add_column("group", style="bold", overflow="fold")
        table.add_column("runs", justify="right", no_wrap=True)
        for j in block:
            table.add_column(headers[j], justify="right", no_wrap=True, min_width=widths[j] - 3)
        for i, g in enumerate(report.groups):
            row = []
            for j in block:
                text = cells[i][j]
                best = report.best.get(report.metrics[j]) == i
                row.append((f"[bold green]{text}[/bold green]" if terminal else f"*{text}") if best else text)
            table.add_row(g.label, f"{len(g.ok_runs)}/{len(g.runs)}", *row)
        console.print(table)
    if report.common:
        console.print("common overrides: " + " ".join(f"{k}={v}" for k, v in report.common.items()), highlight=False)
    for labels in label_lines(report):
        console.print(f"labels: {labels}", highlight=False, markup=False, soft_wrap=True)
    if report.failed:
        console.print(f"[bold red]{len(report.failed)} run(s) not ok:[/bold red]")
        for run in report.failed:
            console.print(f"  {_rel(run.path, report.roots)}  {run.status}: {run.reason}  [{' '.join(run.overrides)}]",
                          highlight=False, markup=False)


def label_lines(report: Report) -> list[str]:
    """The distinct class orders / label values of the runs' own data (``task.json`` ``labels``)."""
    return list(dict.fromkeys(r.labels for g in report.groups for r in g.runs if r.labels))


def write_csv(report: Report, path: Path) -> None:
    """One row per group: its keys, run counts, and ``<metric>_mean/_std/_n`` per metric."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["group", *report.keys, "runs_ok", "runs_total"]
    for m in report.metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    writer.writerow(header)
    for g in report.groups:
        row = [g.label, *(g.values.get(k, "-") for k in report.keys), len(g.ok_runs), len(g.runs)]
        for m in report.metrics:
            s = g.stats.get(m)
            row += ["", "", 0] if s is None else [repr(s.mean), "" if s.std is None else repr(s.std), s.n]
        writer.writerow(row)
    path.write_text(buf.getvalue())


def markdown(report: Report, plots: list[Path]) -> str:
    lines = ["# softloss report", ""]
    lines.append(f"{_runs_line(report)}, from {', '.join(f'`{r}`' for r in report.roots)}. "
                 "Cells: mean ± std (n) over the runs of a group (sample std); **bold**: the best of each column "
                 "(↑ higher is better, ↓ lower is better).")
    if report.common:
        lines += ["", "Common overrides: `" + " ".join(f"{k}={v}" for k, v in report.common.items()) + "`"]
    lines += [f"\nLabels: {labels}" for labels in label_lines(report)]
    lines.append("")
    header = ["group", "runs", *(f"{m} {_arrow(report, m)}" for m in report.metrics)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", "---:"] + ["---:"] * len(report.metrics)) + "|")
    for i, g in enumerate(report.groups):
        cells = [cell(g.stats.get(m)) for m in report.metrics]
        cells = [f"**{c}**" if report.best.get(m) == i else c for c, m in zip(cells, report.metrics)]
        lines.append("| " + " | ".join([g.label.replace("|", "\\|"), f"{len(g.ok_runs)}/{len(g.runs)}", *cells]) + " |")
    if report.failed:
        lines += ["", "## Runs that did not finish", ""]
        for run in report.failed:
            reason = run.reason.replace("`", "'")
            lines.append(f"- `{_rel(run.path, report.roots)}` **{run.status}**: {reason} (`{' '.join(run.overrides)}`)")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}](plots/{p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _short_label(label: str) -> str:
    """A group label for plots: long numbers (Optuna's learning rates) to 4 significant digits."""

    def shorten(match: re.Match) -> str:
        text = match.group(0)
        try:
            return f"{float(text):.4g}" if len(text) > 8 else text
        except ValueError:
            return text

    return re.sub(r"(?<==)[-+0-9.eE]+", shorten, label)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_plots(report: Report, folder: Path) -> list[Path]:
    """``bar_<metric>.png`` per metric (mean, std error bars, best bar highlighted) and
    ``curve_<val metric>.png`` per metric found in the runs' ``history.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    labels = [_short_label(g.label) for g in report.groups]
    # Horizontal bars: group labels (often long override lists) read on the y axis.
    height = max(2.4, 0.45 * len(labels) + 1.4)
    for m in report.metrics:
        present = [(i, g.stats[m]) for i, g in enumerate(report.groups) if m in g.stats]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(7.5, height), layout="constrained")
        ys = [i for i, _ in present]
        colours = ["tab:green" if report.best.get(m) == i else "tab:blue" for i in ys]
        ax.barh(ys, [s.mean for _, s in present], xerr=[s.std or 0.0 for _, s in present], capsize=4,
                color=colours, edgecolor="black", linewidth=0.5)
        for y, s in present:
            ax.annotate(f" {_number(s.mean)} (n={s.n})", (s.mean + (s.std or 0.0), y), va="center",
                        fontsize="x-small")
        ax.set_yticks(range(len(labels)), labels, fontsize="small")
        ax.invert_yaxis()  # first group on top, as in the table
        ax.margins(x=0.25)
        ax.set_xlabel(m)
        how = {"lower": "lower is better; ", "higher": "higher is better; "}.get(report.direction[m], "")
        ax.set_title(f"{m} ({how}bars: mean, whiskers: std)",
                     fontsize="medium")
        path = folder / f"bar_{_slug(m)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    histories = {id(r): r.history() for g in report.groups for r in g.ok_runs}
    curve_metrics = ["train/epoch_loss"]
    for m in report.metrics:
        val = "val/" + m.split("/", 1)[1] if "/" in m else f"val/{m}"
        if val not in curve_metrics:
            curve_metrics.append(val)
    for m in curve_metrics:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        drawn = False
        for g in report.groups:
            by_epoch: dict[int, list[float]] = {}
            for r in g.ok_runs:
                for rec in histories[id(r)]:
                    v = rec.get(m)
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        by_epoch.setdefault(int(rec["epoch"]) + 1, []).append(float(v))
            if not by_epoch:
                continue
            epochs = sorted(by_epoch)
            stats = [stat(by_epoch[e]) for e in epochs]
            means = [s.mean for s in stats]
            stds = [s.std or 0.0 for s in stats]
            (line,) = ax.plot(epochs, means, marker="o", markersize=3, label=_short_label(g.label))
            ax.fill_between(epochs, [a - b for a, b in zip(means, stds)], [a + b for a, b in zip(means, stds)],
                            color=line.get_color(), alpha=0.15, linewidth=0)
            drawn = True
        if drawn:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(m)
            ax.set_title(f"{m} per epoch (mean ± std over each group's runs)", fontsize="medium")
            ax.legend(fontsize="x-small")
            path = folder / f"curve_{_slug(m)}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
        plt.close(fig)
    return written


# --------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    p = command_parser(
        "report",
        "Compare finished runs: one row per group of runs (their overrides minus the seed), "
        "cells mean ± std (n), best per column in bold; writes report.csv, report.md and plots/.",
        ["softloss report runs/multirun/2026-11-22_17-03-11",
         "softloss report runs --group-by loss --metrics accuracy,mae,'avgk_*'"],
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories or folders holding runs (searched recursively)")
    p.add_argument("--group-by", metavar="KEYS",
                   help="comma-separated keys that define a group (override names, group choices such as loss, "
                        "or config paths such as optim.lr); default: the overrides that differ, minus seed")
    p.add_argument("--metrics", metavar="NAMES",
                   help="comma-separated metrics (bare names take --split; full names like train/neg_violation_rate; "
                        "globs like 'avgk_*'); default: the headline metrics of the runs' task kind")
    p.add_argument("--split", default="test", choices=("test", "val"), help="split of bare metric names (default: test)")
    p.add_argument("--out", metavar="DIR", help="where report.csv, report.md and plots/ go (default: the PATH, "
                                                "or the folder holding all PATHs; RUN/report for one run)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _out_dir(paths: list[Path]) -> Path:
    """The PATH (or the folder holding all PATHs); ``<run>/report`` when that is one run's
    own directory, so the report's files do not mix with the run's (its ``plots/``)."""
    import os

    out = paths[0] if len(paths) == 1 else Path(os.path.commonpath([str(p.resolve()) for p in paths]))
    return out / "report" if _is_run_dir(out) else out


def main(args: list[str]) -> int:
    opts = _parser().parse_intermixed_args(args)  # PATHs may stand before and after options
    roots = [Path(p) for p in opts.paths]
    run_dirs = find_run_dirs(roots)
    if not run_dirs:
        raise SoftlossError(f"no run directories under {', '.join(map(str, roots))} "
                            "(a run holds status.json, metrics.json or .hydra/overrides.yaml)")
    runs = [load_run(p) for p in run_dirs]
    group_by = [k.strip() for k in opts.group_by.split(",") if k.strip()] if opts.group_by else None
    metrics = select_metrics(opts.metrics, runs, opts.split)
    report = build_report(runs, metrics, group_by, [p.resolve() for p in roots])
    print_report(report)
    out = Path(opts.out) if opts.out else _out_dir(roots)
    out.mkdir(parents=True, exist_ok=True)
    plots = [] if opts.no_plots or not metrics else write_plots(report, out / "plots")
    write_csv(report, out / "report.csv")
    (out / "report.md").write_text(markdown(report, plots))
    print(f"wrote {out / 'report.csv'}, {out / 'report.md'}" + (f" and {len(plots)} plots in {out / 'plots'}" if plots else ""))
    return 0
