"""What a figure gets (Context) and what it answers (FigureResult, one Check per claim)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import build
from bench.harness import Ratio, Settings
from cliproxy_host import PluginHost

# A small envelope request (~100 bytes of JSON), shaped like an executor request.
SMALL_REQUEST: dict[str, Any] = {
    "Model": "gpt-bench",
    "Stream": False,
    "Payload": "aGVsbG8gd29ybGQsIGhlbGxvIHBsdWdpbg==",
    "Metadata": {"k": "v"},
}


@dataclass
class Context:
    """Shared by every figure of a run."""

    settings: Settings
    workdir: Path  # a temp dir, removed after the run
    out_dir: Path  # where RESULTS.md (and payload.png) go
    _plugin: Path | None = None

    def bench_plugin(self) -> Path:
        """bench/plugins/bench_plugin.c, compiled once per run (cached across runs)."""
        if self._plugin is None:
            self._plugin = build.bench_plugin()
        return self._plugin

    def private_copy(self, name: str) -> Path:
        """A copy of the bench plugin under its own path: its own load, its own globals."""
        return build.copy_library(self.bench_plugin(), self.workdir / "libs" / f"{name}.so")

    def host_dir(self, name: str) -> build.HostDir:
        return build.HostDir(self.workdir / name)


@dataclass
class Check:
    """One claim of a figure: the measured value, its spread, the target and the verdict."""

    key: str  # e.g. "1a"
    label: str
    measured: str  # e.g. "1.62x (1.55-1.70)"
    target: str = "-"
    met: bool | None = None  # None: informational, or not measured
    absolute: str = ""
    value: float | None = None
    # The baseline itself could not reach the target on this machine at this time (e.g.
    # another process held a core): the measurement cannot tell either way.
    inconclusive: bool = False

    @classmethod
    def ratio(
        cls,
        key: str,
        label: str,
        ratio: Ratio,
        *,
        target: str = "-",
        met: bool | None = None,
        absolute: str = "",
    ) -> Check:
        return cls(key, label, ratio.full_text(), target, met, absolute, ratio.value)

    @property
    def verdict(self) -> str:
        if self.measured == "error":
            return "ERROR"
        if self.inconclusive:
            return "inconclusive"
        if self.met is None:
            return "info"
        return "met" if self.met else "MISSED"


@dataclass
class FigureResult:
    number: int
    title: str
    checks: list[Check] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown, printed under the figure
    seconds: float = 0.0


FigureFn = Callable[[Context], FigureResult]


@dataclass(frozen=True)
class Figure:
    """An entry of the registry: a function, or the rows it will fill once it can run."""

    number: int
    title: str
    run: FigureFn


@contextmanager
def loaded_host(
    ctx: Context,
    name: str,
    plugins: dict[str, Path],
    plugins_settings: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    **plugin_config: Any,
) -> Iterator[PluginHost]:
    """A PluginHost loaded from a real YAML config in a temp dir, closed afterwards.

    `plugin_config` goes into every plugin's entry under plugins.configs,
    `plugins_settings` (host defaults such as spin-us) into the plugins section, and
    `extra` (other sections, such as metrics) at the top level.
    """
    hd = ctx.host_dir(name)
    for pid, lib in plugins.items():
        hd.add(pid, lib, **plugin_config)
    hd.write_config(extra=extra, plugins_settings=plugins_settings)
    host = PluginHost.from_config(hd.config_path)
    try:
        for info in host.plugins():
            if not info.registered:
                raise RuntimeError(f"plugin {info.id} did not load: {info.error}")
        yield host
    finally:
        host.close()


@contextmanager
def program_host(
    ctx: Context, name: str, plugin_id: str, command: list[str]
) -> Iterator[PluginHost]:
    """A PluginHost with one plugin program (docs/PROTOCOL.md) started from `command`."""
    hd = ctx.host_dir(name)
    hd.configs[plugin_id] = {"enabled": True, "command": command}
    hd.write_config()
    host = PluginHost.from_config(hd.config_path)
    try:
        info = host.plugin(plugin_id)
        if info is None or not info.registered:
            raise RuntimeError(f"plugin program {plugin_id} did not load: {info and info.error}")
        yield host
    finally:
        host.close()


@contextmanager
def quiet_plugin_logs(level: int = logging.INFO) -> Iterator[None]:
    """host.log lines below `level` are dropped (rendering is skipped, nothing is written)."""
    logger = logging.getLogger("cliproxy_host.plugin")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
