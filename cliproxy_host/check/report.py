"""The report of a check run: one CheckResult per line, printed as a table or JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from . import limits

Status = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True)
class CheckResult:
    """One line of the report."""

    name: str
    status: Status
    reason: str
    fix: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class Report:
    """Every check's result for one plugin file, and how long the run took."""

    path: Path
    isolated: bool
    results: tuple[CheckResult, ...]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[Status, int]:
        counted = Counter(r.status for r in self.results)
        statuses: tuple[Status, ...] = ("pass", "warn", "fail", "skip")
        return {s: counted[s] for s in statuses}

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.results]

    def table(self) -> str:
        width = max(len("CHECK"), *(len(r.name) for r in self.results))
        lines = [f"{'STATUS':<6}  {'CHECK':<{width}}  REASON / FIX"]
        for r in self.results:
            lines.append(f"{r.status:<6}  {r.name:<{width}}  {r.reason}".rstrip())
            if r.fix and r.status != "pass":
                lines.append(f"{'':<6}  {'':<{width}}  fix: {r.fix}")
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines.append(
            f"{self.path}: {len(self.results)} checks, {counts} in {self.seconds:.2f} s "
            f"(a well-behaved plugin takes under {limits.RUN_GOAL_SECONDS:g} s)"
        )
        if self.isolated:
            lines.append("isolated: the plugin ran in a worker process")
        else:
            lines.append(
                "in-process: a plugin that crashes takes this check down with it; "
                "use --isolated for untrusted binaries"
            )
        return "\n".join(lines)
