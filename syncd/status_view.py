"""The human view of `syncd status`: a rich table per pair, with its problems and transfers."""

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
    """A table per pair (where it syncs, its counts, when it was last in sync, its last
    error), then that pair's failures, conflicts and transfers in flight beneath it."""
    console = _console()
    console.print(f"syncd {status.get('state', '?')}, up {status.get('uptime_s', 0):.0f} s")
    transfers = status.get("transfers") or []
    for pair in status.get("pairs", []):
        console.print()
        console.print(_pair_table(pair))
        _print_problems(console, pair)
        mine = [t for t in transfers if t.get("pair") == pair["name"]]
        if mine:
            console.print(_transfer_table(mine))


def _count(n: int, noun: str) -> str:
    """`1 file`, `2 files`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _pair_table(pair: dict[str, Any]) -> Table:
    state = pair["state"]
    style = _STATE_STYLE.get(state, "")
    shown = f"[{style}]{state}[/{style}]" if style else state
    table = Table(
        title=f"[bold]{escape(pair['name'])}[/bold]: {shown}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")  # a long remote or error wraps, whole
    rows = [
        ("local", pair.get("local")),
        ("remote", pair.get("remote")),
        ("queued", pair["queued"]),
        ("in flight", pair["in_flight"]),
        ("synced", _count(pair["synced_files"], "file")),
        ("failed", pair["failed"]),
        ("conflicts", pair["conflicts"]),
    ]
    if pair.get("held"):
        reason = f" ({pair['held_reason']})" if pair.get("held_reason") else ""
        rows.append(
            (
                "held",
                f"{_count(pair['held'], 'deletion')}{reason}: `syncd sync --force` lets "
                f"{'it' if pair['held'] == 1 else 'them'} through",
            )
        )
    if pair.get("waiting"):
        verb = "waits" if pair["waiting"] == 1 else "wait"
        rows.append(("waiting", f"{_count(pair['waiting'], 'file')} {verb} for a held deletion"))
    rows.append(("last sync", pair["last_sync"] or "never"))
    if pair.get("last_error"):
        rows.append(("last error", f"[red]{escape(printable(pair['last_error']))}[/red]"))
    for key, value in rows:
        if value is not None:
            table.add_row(key, value if key == "last error" else escape(str(value)))
    return table


def _print_problems(console: Console, pair: dict[str, Any]) -> None:
    """The pair's failures (each with its retry) and open conflicts, one line each."""
    for failure in pair.get("failures") or []:
        if failure["next_try"] is not None:
            retry = f"attempt {failure['attempts']}, next try {failure['next_try']}"
        elif failure.get("waits_for"):  # a pair in error: tried when the remote is back
            retry = f"attempt {failure['attempts']}, next try when {failure['waits_for']} answers"
        else:
            retry = "not retried: rename it"  # a refused name (see PairStats.refused)
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
    table = Table(show_header=True, header_style="bold", title="transfers", title_justify="left")
    # A long path wraps rather than losing its end: every file of one deep folder read the
    # same (`quarterly-reports…`), and which one moved could not be told.
    table.add_column("file", overflow="fold", min_width=12)
    table.add_column("", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    for column in ("done", "speed"):
        table.add_column(column, overflow="fold")
    for t in transfers:
        total = max(int(t["bytes_total"]), 1)
        done = int(t["bytes_done"])
        table.add_row(
            escape(printable(t["path"])),
            "↑" if t["direction"] == "upload" else "↓",
            ProgressBar(total=total, completed=done, width=12),
            f"{filesize.decimal(done)} / {filesize.decimal(int(t['bytes_total']))}",
            f"{filesize.decimal(int(t['speed_bps']))}/s",
        )
    return table
