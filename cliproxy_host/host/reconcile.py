"""Reconcile: what has to change to bring the loaded plugins in line with a config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..abi import LIBRARY_SUFFIX
from ..backends.protocol import State
from ..config import HostConfig, PluginConfig
from ..discovery import PluginFile, discover, plugins_dir_problem
from ..errors import ConfigError
from ..wheels import scan_wheels
from .loader import Slot, Spec, program_command, stamp
from .registry import ConfigField, Registration, check_settings
from .sockets import is_socket_plugin, socket_path


def plugins_dir_error(cfg: HostConfig) -> str | None:
    """Why the config's plugins dir cannot be used, naming the config file; None when it
    can, or when plugins are off (then nothing is read from it)."""
    if not cfg.plugins.enabled:
        return None
    problem = plugins_dir_problem(cfg.plugins_dir())
    if problem is None:
        return None
    return f"{cfg.source_path or '<memory>'}: plugins.dir: {problem}"


def settings_error(plugin_id: str, registration: Registration, entry: PluginConfig) -> str | None:
    """How a plugin's settings break the ConfigFields it declared, worded as the management
    API words it (`plugins.configs.<id>.<key>: ...`); None when they fit."""
    return fields_error(plugin_id, registration.metadata.config_fields, entry)


def fields_error(plugin_id: str, fields: Iterable[ConfigField], entry: PluginConfig) -> str | None:
    """settings_error against a list of fields (those a plugin declared when last loaded)."""
    problems = check_settings(fields, entry.settings)
    if not problems:
        return None
    prefix = f"plugins.configs.{plugin_id}."
    return prefix + f"; {prefix}".join(problems)


@dataclass
class Plan:
    """The steps of one apply, in the order they run: reconfigure, retire, load."""

    files: dict[str, PluginFile]  # every plugin file discovered
    problems: dict[str, str]  # plugin ID -> why its file(s) were passed over
    reconfigure: list[str] = field(default_factory=list)  # same backend, new config
    retire: list[str] = field(default_factory=list)  # no longer wanted
    load: dict[str, PluginFile] = field(default_factory=dict)  # new, or a new backend
    # Of `load`: those whose old backend must be shut down before the new one starts.
    restart: list[str] = field(default_factory=list)


def plan(
    cfg: HostConfig, slots: Mapping[str, Slot], connected: frozenset[str] = frozenset()
) -> Plan:
    """Compare the plugins `cfg` wants (on disk, enabled) with the loaded `slots`.

    A plugin whose selected file changed is loaded anew; beside its predecessor (a swap),
    unless its config says `reload: restart` or the file was replaced in place (the
    dynamic loader would hand back the library already loaded under that name). A change
    of limits or isolation needs a new backend too; a fused plugin gets a fresh start
    when its config changes. Anything else whose config changed is reconfigured.

    A plugin program that connects to plugins.socket is loaded once it has connected
    (`connected`), and kept while it reconnects.

    Raises ConfigError, planning nothing, when plugins are on and the plugins dir is
    missing or not a directory.
    """
    dir_error = plugins_dir_error(cfg)
    if dir_error is not None:
        # Nothing is planned: an unusable dir would otherwise read as "every plugin gone".
        raise ConfigError(dir_error)
    pins = {
        pid: pin
        for pid in cfg.plugins.configs
        if (pin := cfg.plugin_entry(pid).pinned_version) is not None
    }
    wheels = scan_wheels(LIBRARY_SUFFIX)
    found = discover(cfg.plugins_dir(), pins, extra=wheels.files, extra_problems=wheels.problems)
    for pid in cfg.plugins.configs:
        command = program_command(cfg, pid)
        if command is not None:  # a program: its file is its script or binary, not a library
            found.files[pid] = PluginFile(pid, command.program_file(), None)
            found.problems.pop(pid, None)
    waiting = _socket_plugins(cfg, slots, connected, found.files, found.problems)
    wanted = {
        pid: f
        for pid, f in found.files.items()
        if cfg.plugins.enabled and cfg.plugin_entry(pid).enabled and pid not in waiting
    }
    steps = Plan(dict(found.files), dict(found.problems))
    steps.retire = [pid for pid in slots if pid not in wanted]
    for pid, pfile in wanted.items():
        slot = slots.get(pid)
        restarts = cfg.plugin_entry(pid).reload == "restart"
        if slot is None:
            steps.load[pid] = pfile
        elif slot.file.path != pfile.path or slot.stamp != stamp(pfile.path):
            steps.load[pid] = pfile
            if slot.file.path == pfile.path or restarts:
                steps.restart.append(pid)
        elif slot.spec != Spec.of(cfg, pid) or (
            slot.config_yaml != cfg.config_yaml(pid) and slot.backend.health().state is State.FUSED
        ):
            steps.load[pid] = pfile
            # A new trust policy retires the old library first: bytes the new pin or keys
            # refuse must not go on serving because their successor failed to load.
            if slot.spec.isolated or restarts or slot.spec.trust != cfg.trust_policy(pid):
                steps.restart.append(pid)
        elif slot.config_yaml != cfg.config_yaml(pid):
            steps.reconfigure.append(pid)
    return steps


def _socket_plugins(
    cfg: HostConfig,
    slots: Mapping[str, Slot],
    connected: frozenset[str],
    files: dict[str, PluginFile],
    problems: dict[str, str],
) -> set[str]:
    """Enter the plugins whose programs connect to plugins.socket into `files`; answer
    those not to load yet (not connected, and not loaded), with why in `problems`."""
    path = socket_path(cfg)
    waiting: set[str] = set()
    for pid in cfg.plugins.configs:
        if not is_socket_plugin(cfg, pid):
            continue
        problems.pop(pid, None)
        if path is None:
            problems[pid] = (
                f"plugins.configs.{pid} has a token, but plugins.socket is not set: set it "
                "to the socket its program connects to"
            )
            files.pop(pid, None)
            continue
        files[pid] = PluginFile(pid, path, None)
        if pid not in slots and pid not in connected:
            waiting.add(pid)
            problems[pid] = (
                f"waiting for its program to connect to plugins.socket {path} "
                f"(with CLIPROXY_PLUGIN_ID={pid}, CLIPROXY_PLUGIN_SOCKET and its token in "
                "CLIPROXY_PLUGIN_TOKEN)"
            )
    return waiting
