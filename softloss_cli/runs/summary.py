"""The table a finished run prints: final val/test metrics and where the run lives."""

from __future__ import annotations

from pathlib import Path

#: above this many metric names the table keeps to the headline ones (a multiclass run also
#: reports ~60 Average-K metrics); ``metrics.json`` always holds them all.
MAX_ROWS = 25


def summary_names(metrics: dict[str, float], kind: str | None = None, data: str | None = None) -> list[str]:
    """The bare metric names the summary shows: all of them when there are at most ``MAX_ROWS``,
    else the headline metrics of the task kind / scenario dataset (``tasks.headline_metrics``)."""
    from softloss_cli.tasks import headline_metrics, infer_kind

    names = sorted({k.split("/", 1)[1] for k in metrics})
    if len(names) <= MAX_ROWS:
        return names
    headline = headline_metrics(kind or infer_kind(metrics), data)
    return [n for n in headline if n in names] or names[:MAX_ROWS]


def print_run_summary(metrics: dict[str, float], run_dir: Path, compact: bool = False, checkpoint: str = "best",
                      kind: str | None = None, data: str | None = None) -> None:
    """A rich table (metric x split) of ``summary_names``; ``compact`` prints one line of the
    first four headline test metrics (used for sweep jobs), never wrapped. What is printed
    also goes to the job's ``train.log``."""
    from rich.table import Table

    from softloss_cli.progress import console as plain_console
    from softloss_cli.progress import log_only, say
    from softloss_cli.tasks import headline_metrics, infer_kind

    if compact:
        headline = headline_metrics(kind or infer_kind(metrics), data)
        shown = [n for n in headline if f"test/{n}" in metrics][:4]
        head = ", ".join(f"{n} {metrics[f'test/{n}']:.4f}" for n in shown)
        say(f"done: {head}  -> {run_dir}")
        return
    console = plain_console(record=True)  # off a terminal: unwrapped lines; recorded for train.log
    names = summary_names(metrics, kind, data)
    table = Table(title=f"final metrics ({checkpoint} checkpoint)")
    table.add_column("metric")
    for split in ("val", "test"):
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[f'{s}/{name}']:.4f}" if f"{s}/{name}" in metrics else "-" for s in ("val", "test")))
    console.print(table)
    hidden = len({k.split("/", 1)[1] for k in metrics}) - len(names)
    if hidden:
        console.print(f"{hidden} more metrics in {run_dir / 'metrics.json'} (softloss report lists them all)")
    console.print(f"run directory: [bold]{run_dir}[/bold]")
    log_only("\n" + console.export_text().rstrip())
