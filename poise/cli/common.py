"""What every `poise` command shares: the typer app, the consoles, the error exit and the progress bars."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="poise: automated discovery of RL algorithms for language models.")
# Output to a file or a pipe is not cut to 80 columns (rich's default off a terminal): it keeps its full
# lines, up to PIPE_WIDTH, unless COLUMNS says otherwise. A terminal gets its own width.
PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH)
err = Console(stderr=True, soft_wrap=True)  # error text stays on one line, so it can be grepped


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}")  # messages quote paths and archive text
    raise typer.Exit(code)


def progress() -> Progress:
    # at 80 columns the description and the info give way (cut with …), never the counts and the times
    return Progress(TextColumn("{task.description}", table_column=Column(max_width=32, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=12), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, expand=True)


