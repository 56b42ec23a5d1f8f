"""What the loop reports as it goes (a light module: the CLI imports it before the loop's engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poise.discovery.archive import Entry


class Events:
    """What the loop reports as it goes; the CLI turns these into progress bars and lines."""

    def message(self, text: str) -> None: ...
    def eval_started(self, entry: Entry, seed: int, purpose: str) -> None: ...
    def eval_step(self, entry_id: int, seed: int, step: int, row: dict) -> None: ...
    def eval_finished(self, entry: Entry, seed: int, ok: bool, text: str) -> None: ...
