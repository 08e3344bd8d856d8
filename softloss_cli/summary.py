"""The table a finished run prints: final val/test metrics and where the run lives."""

from __future__ import annotations

from pathlib import Path


def print_run_summary(metrics: dict[str, float], run_dir: Path, compact: bool = False, checkpoint: str = "best") -> None:
    """A rich table (metric x split); ``compact`` prints one line (used for sweep jobs)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    names = sorted({k.split("/", 1)[1] for k in metrics})
    if compact:
        head = ", ".join(f"{n} {metrics[f'test/{n}']:.4f}" for n in names[:4] if f"test/{n}" in metrics)
        console.print(f"done: {head}  -> {run_dir}", highlight=False)
        return
    table = Table(title=f"final metrics ({checkpoint} checkpoint)")
    table.add_column("metric")
    for split in ("val", "test"):
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[f'{s}/{name}']:.4f}" if f"{s}/{name}" in metrics else "-" for s in ("val", "test")))
    console.print(table)
    console.print(f"run directory: [bold]{run_dir}[/bold]")
