"""The human view of `syncd status`: one rich table of pairs."""

from __future__ import annotations

from typing import Any

from rich import filesize
from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from syncd.engine.paths import printable

_STATE_STYLE = {
    "idle": "green",
    "syncing": "cyan",
    "paused": "yellow",
    "held": "yellow",
    "error": "red",
}


#: The width of a "console" that is a pipe or a file: wider than any status, so nothing is cut.
UNBOUNDED = 10_000


def render_status(status: dict[str, Any]) -> None:
    console = _console()
    console.print(f"syncd {status.get('state', '?')}, up {status.get('uptime_s', 0):.0f} s")
    table = Table(show_header=True, header_style="bold")
    for column in (
        "pair",
        "state",
        "queued",
        "in flight",
        "synced",
        "failed",
        "conflicts",
        "last sync",
    ):
        table.add_column(column)
    for pair in status.get("pairs", []):
        style = _STATE_STYLE.get(pair["state"], "")
        table.add_row(
            pair["name"],
            f"[{style}]{pair['state']}[/{style}]" if style else pair["state"],
            str(pair["queued"]),
            str(pair["in_flight"]),
            str(pair["synced_files"]),
            str(pair["failed"]),
            str(pair["conflicts"]),
            pair["last_sync"] or "never",
        )
    console.print(table)
    for pair in status.get("pairs", []):
        if pair.get("last_error"):
            console.print(
                f"[red]{pair['name']}[/red]: {escape(printable(pair['last_error']))}",
                markup=True,
                highlight=False,
            )
        for failure in pair.get("failures") or []:
            retry = (
                f"attempt {failure['attempts']}, next try {failure['next_try']}"
                if failure["next_try"] is not None
                else "not retried: rename it"  # a refused name (see PairStats.refused)
            )
            console.print(
                f"  [red]failed[/red] {escape(printable(failure['path']))} ({failure['op']}): "
                f"{escape(printable(failure['error']))} — {retry}",
                highlight=False,
            )
        for path in pair.get("conflict_paths") or []:
            console.print(
                f"  [yellow]conflict[/yellow] {escape(path)} — `syncd resolve` settles it",
                highlight=False,
            )
    transfers = status.get("transfers") or []
    if transfers:
        console.print(_transfer_table(transfers))


def _console() -> Console:
    """A terminal's width where there is one. A pipe or a file has none, and rich would assume
    80 columns and cut the table to them (`2026-11…` for the last sync): a script reading
    `syncd status > file` needs every character, so there the lines are as long as they are."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=UNBOUNDED)


def _transfer_table(transfers: list[dict[str, Any]]) -> Table:
    """In-flight transfers: a bar per file with bytes done, total and speed."""
    table = Table(show_header=True, header_style="bold", title="transfers")
    for column in ("pair", "file", "", "progress", "done", "speed"):
        table.add_column(column)
    for t in transfers:
        total = max(int(t["bytes_total"]), 1)
        done = int(t["bytes_done"])
        table.add_row(
            t["pair"],
            t["path"],
            "↑" if t["direction"] == "upload" else "↓",
            ProgressBar(total=total, completed=done, width=30),
            f"{filesize.decimal(done)} / {filesize.decimal(int(t['bytes_total']))}",
            f"{filesize.decimal(int(t['speed_bps']))}/s",
        )
    return table
