"""The `plugins` table: fitted to the terminal by rich, every column with --wide."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import IO, Final

from rich.console import Console
from rich.table import Table

from ..host.facade import PluginInfo

GAP: Final = 2  # blanks between two columns
MIN_ERROR_WIDTH: Final = len("ERROR")  # its header
# Blanks at the end of a line, before the escape codes that may close it.
TRAILING_BLANKS: Final = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")
# Wide enough that rich never folds or clips a --wide table written to a pipe or a file.
UNBOUNDED_WIDTH: Final = 100_000


def state_of(info: PluginInfo) -> str:
    """Registered or not, and how its backend is doing, in one cell."""
    if info.loading:
        return "loading"
    if not info.registered:
        return "not loaded"
    state = info.state or "registered"
    if info.restarts:
        state += f" ({info.restarts} restarts)"
    return state


def problem_of(info: PluginInfo) -> str:
    """Why it is not loaded, or its last runtime failure while it is not running."""
    problem = info.error or (info.last_error if info.state not in (None, "running") else None)
    # The row names the plugin already: its errors' "plugin <id>: " prefix only takes room.
    return (problem or "").removeprefix(f"plugin {info.id}: ")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def plugins_table(infos: Sequence[PluginInfo], *, wide: bool, width: int) -> Table:
    """The table of `infos` in `width` columns: the narrow one cuts the error to what is
    left (the whole text is in --wide and --json); the wide one shows every column whole."""
    headers = ["ID", "VERSION", "PRIO", "ENABLED", "STATE"]
    rows = [
        [
            info.id,
            info.version or "-",
            str(info.priority),
            "yes" if info.enabled else "no",
            state_of(info),
        ]
        for info in infos
    ]
    if wide:
        headers += ["ISOLATION", "CAPABILITIES", "PATH"]
        for row, info in zip(rows, infos, strict=True):
            caps = ",".join(sorted(k for k, v in info.capabilities.items() if v is True))
            row += [info.isolation, caps or "-", info.path or "-"]
    # Every column but ERROR at its natural width, each followed by a gap of two.
    used = sum(max(len(h), *(len(r[i]) for r in rows)) + GAP for i, h in enumerate(headers))
    error_width = max(width - used, MIN_ERROR_WIDTH)
    headers.append("ERROR")
    for row, info in zip(rows, infos, strict=True):
        problem = problem_of(info) or "-"
        row.append(problem if wide else _shorten(problem, error_width))
    table = Table(box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True, justify="right" if header == "PRIO" else "left")
    for row in rows:
        table.add_row(*row)
    return table


def print_plugins_table(infos: Sequence[PluginInfo], *, wide: bool, file: IO[str]) -> None:
    """Print the table to `file`: styled on a terminal, plain text anywhere else.

    Fitted to the terminal's width (COLUMNS, else 80, off a terminal); with --wide every
    line is whole, however long, and a terminal folds it.
    """
    console = Console(file=file, highlight=False)
    width = UNBOUNDED_WIDTH if wide else console.width
    # Rendered off-screen, then written without the blanks rich pads each cell with, which
    # a terminal would fold into empty lines under a --wide table.
    render = Console(
        file=io.StringIO(),
        width=width,
        highlight=False,
        force_terminal=console.is_terminal,
        color_system="auto" if console.is_terminal else None,
    )
    render.print(plugins_table(infos, wide=wide, width=width))
    text = render.file.getvalue()  # type: ignore[attr-defined]
    file.write("".join(TRAILING_BLANKS.sub(r"\1", line) + "\n" for line in text.splitlines()))
