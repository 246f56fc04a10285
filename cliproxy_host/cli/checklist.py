"""`check`'s live list: each check's line as it finishes, on a terminal only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from ..check.report import CheckResult

STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def result_line(result: CheckResult) -> Text:
    """One finished check as the live list shows it: status, seconds, name, reason, cut to
    one screen line (one line per check is what lets the list fit the screen)."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(f"{result.status:<6}", style=STYLES.get(result.status, ""))
    line.append(f"{result.seconds:6.2f} s", style="dim")
    line.append(f"  {result.name}")
    if result.reason:
        line.append(f"  {result.reason}", style="dim")
    return line


class CheckList:
    """Collects finished checks and shows them under a "running" line while it lasts."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lines: list[Text] = []

    def add(self, result: CheckResult) -> None:
        self._lines.append(result_line(result))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # The newest lines that fit the screen: a live display taller than the terminal
        # would be cut at the bottom, hiding the lines that just finished. The final
        # report shows them all.
        room = max(console.height - 2, 1)
        yield from self._lines[-room:]
        yield Text(f"checking {self._path}: {len(self._lines)} done ...", style="bold")


@contextmanager
def live_checklist(path: str, file: IO[str]) -> Iterator[Callable[[CheckResult], None] | None]:
    """A progress callback for run_checks that shows each finished check on `file` at once,
    the list being erased at the end (the final report follows it); None when `file` is
    not a terminal, which stays quiet."""
    console = Console(file=file, highlight=False)
    if not console.is_terminal:
        yield None
        return
    checklist = CheckList(path)
    with Live(checklist, console=console, transient=True, refresh_per_second=4) as live:

        def add(result: CheckResult) -> None:
            checklist.add(result)
            live.refresh()  # now, not at the next tick: a check may take seconds

        yield add
