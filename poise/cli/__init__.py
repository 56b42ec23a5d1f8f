"""The `poise` command: `train`, `discover`, and the views of a run (`status`, `show`, `export`,
`report`), one module each; `common` holds the app and the consoles."""

from __future__ import annotations

from rich.table import Table

from poise.cli import common
from poise.cli.common import app

__all__ = ["app", "main"]


@app.command("algorithms")
def algorithms_cmd() -> None:
    """List the built-in algorithm library."""
    from poise.algorithms import describe_builtins

    t = Table(title="built-in algorithms", show_lines=False)
    t.add_column("name", style="bold")
    t.add_column("summary")
    for name, doc in describe_builtins():
        t.add_row(name, doc)
    common.console.print(t)
    common.console.print("Use one with [bold]poise train --algorithm NAME[/], or write your own file defining "
                         "compute_advantages(batch, cfg) and pass its path.")


# the commands register themselves with `app`, in the order `poise --help` lists them
from poise.cli import train  # noqa: E402, F401, I001
from poise.cli import discover  # noqa: E402, F401
from poise.cli import views  # noqa: E402, F401


def main() -> None:
    app()
