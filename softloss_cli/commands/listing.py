"""``softloss list``: the datasets, models and losses a user can pick, with what each one is."""

from __future__ import annotations

from softloss_cli.config import catalog


def print_catalog(args: list[str]) -> None:
    """Rich tables of the data, model and loss choices (losses with the task kinds they accept)."""
    from rich.table import Table

    from softloss_cli.progress import console as plain_console

    wanted = args or ["data", "model", "loss", "experiment"]
    console = plain_console()  # off a terminal: no wrapped lines
    titles = {"data": "datasets (data=...)", "model": "models (model=...)", "loss": "losses (loss=...)",
              "experiment": "experiment presets (experiment=...)"}
    for group in wanted:
        if group not in titles:
            from softloss_cli.errors import SoftlossError

            raise SoftlossError(f"unknown list '{group}'; choose from: {', '.join(titles)}")
        names = catalog.choices(group)
        if not names:
            continue
        table = Table(title=titles[group], title_justify="left")
        table.add_column("name", style="bold")
        if group == "loss":
            table.add_column("task kinds")
        table.add_column("description")
        for name in names:
            row = [name]
            if group == "loss":
                row.append(", ".join(catalog.loss_class(name).task_kinds))
            row.append(catalog.describe(group, name))
            table.add_row(*row)
        console.print(table)
