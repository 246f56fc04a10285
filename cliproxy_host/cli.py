"""The `cliproxy-host` command: list and call plugins, and serve the management API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson
import uvicorn

from . import __version__
from .envelope import ok
from .errors import ConfigError, PluginError, PluginNotFound, PluginNotLoaded
from .host.facade import PluginHost, PluginInfo
from .host.service import HostService
from .management.app import create_app
from .management.auth import (
    KeyChecker,
    ManagementAuth,
    generate_key,
    key_from_env,
    protect_secret,
)

EXIT_OK: Final = 0
EXIT_ERROR_ENVELOPE: Final = 1
EXIT_USAGE: Final = 2


def _parser() -> argparse.ArgumentParser:
    """The command line: one flat declaration of every command and option, read top to
    bottom like the help it prints (longer than most functions for that reason)."""
    parser = argparse.ArgumentParser(
        prog="cliproxy-host", description="A Python host for CLIProxy-ABI native plugins."
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default: WARNING)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plugins = sub.add_parser("plugins", help="list discovered and configured plugins")
    plugins.add_argument("--config", default="config.yaml", help="YAML config file")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    call = sub.add_parser("call", help="call a method of one plugin and print the envelope")
    call.add_argument("plugin_id")
    call.add_argument("method")
    call.add_argument(
        "request", nargs="?", default="{}", help="request JSON (default {}; - reads stdin)"
    )
    call.add_argument("--config", default="config.yaml", help="YAML config file")

    serve = sub.add_parser("serve", help="run the plugins and the management REST API")
    serve.add_argument("--config", default="config.yaml", help="YAML config file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8317, help="port to listen on")

    check = sub.add_parser(
        "check",
        help="run the ABI conformance suite against a plugin file",
        description="Run the ABI conformance suite against a plugin file. Exits 1 if a check "
        "fails. In-process by default: use --isolated for untrusted binaries.",
    )
    check.add_argument("path", type=Path, help="the plugin library (.so, .dylib, .dll)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--isolated",
        action="store_true",
        help="run the plugin in a worker process, so a crash is reported, not fatal",
    )

    new = sub.add_parser(
        "new",
        help="write a plugin project (C or Rust) that builds and passes check",
        description="Write NAME/, a plugin project with a Makefile (build, check, install).",
    )
    new.add_argument("name", help="the plugin ID, also the library's file name")
    new.add_argument(
        "--lang", required=True, choices=["c", "rust"], help="C (CMake) or Rust (cargo)"
    )
    new.add_argument(
        "--capability",
        dest="capabilities",
        action="append",
        default=[],
        metavar="FLAG",
        help="a capability flag to implement, repeatable (default: executor), e.g. "
        "executor, request_normalizer, management_api",
    )
    new.add_argument(
        "--dir", type=Path, default=Path("."), help="where to create NAME/ (default: .)"
    )
    return parser


def _table(infos: Sequence[PluginInfo]) -> str:
    headers = (
        "ID",
        "PRIO",
        "ENABLED",
        "REGISTERED",
        "STATE",
        "VERSION",
        "CAPABILITIES",
        "PATH / ERROR",
    )
    rows = []
    for info in infos:
        caps = ",".join(sorted(k for k, v in info.capabilities.items() if v is True)) or "-"
        version = (info.metadata or {}).get("Version") or info.version or "-"
        state = info.state or ("loading" if info.loading else "-")
        if info.restarts:
            state += f" ({info.restarts} restarts)"
        problem = info.error or (info.last_error if info.state not in (None, "running") else None)
        rows.append(
            (
                info.id,
                str(info.priority),
                "yes" if info.enabled else "no",
                "yes" if info.registered else "no",
                state,
                version,
                caps,
                f"error: {problem}" if problem else (info.path or "-"),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _cmd_plugins(host: PluginHost, as_json: bool) -> int:
    infos = host.plugins()
    if as_json:
        sys.stdout.write(
            orjson.dumps([i.model_dump() for i in infos], option=orjson.OPT_INDENT_2).decode()
            + "\n"
        )
    elif infos:
        print(_table(infos))
    else:
        print(f"no plugins found under {host.config.plugins_dir()}")
    return EXIT_OK


def _cmd_call(host: PluginHost, plugin_id: str, method: str, request: Any) -> int:
    try:
        result = host.call(plugin_id, method, request)
    except PluginError as exc:
        if isinstance(exc, PluginNotFound | PluginNotLoaded):
            print(f"cliproxy-host: {exc}", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.write(exc.to_envelope().decode() + "\n")
        return EXIT_ERROR_ENVELOPE
    sys.stdout.write(ok(result).decode() + "\n")
    return EXIT_OK


def _cmd_serve(config: Path, host: str, port: int, log_level: str) -> int:
    service = HostService(config, protect_secret=protect_secret)
    remote = service.config.remote_management
    env_key = key_from_env()
    generated = None if (remote.secret_key or env_key) else generate_key()
    auth = ManagementAuth(
        KeyChecker(remote.secret_key, env_key, generated=generated),
        allow_remote=remote.allow_remote,
    )
    app = create_app(service, auth)
    shown = f"[{host}]" if ":" in host else host
    print(f"cliproxy-host {__version__}: management API on http://{shown}:{port}", flush=True)
    print(f"  plugins:  http://{shown}:{port}/v0/management/plugins", flush=True)
    print(f"  API docs: http://{shown}:{port}/docs", flush=True)
    if generated:
        print(
            f"  management key (generated for this run, shown once): {generated}\n"
            "  send it as 'Authorization: Bearer <key>'; set remote-management.secret-key or "
            "CLIPROXY_MANAGEMENT_KEY to keep one",
            flush=True,
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    return EXIT_OK


def _cmd_check(path: Path, as_json: bool, isolated: bool) -> int:
    # Imported on use, like .scaffold below: the other commands never need them.
    from .check import run_checks  # noqa: PLC0415

    report = run_checks(path, isolated=isolated)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.table())
    return EXIT_ERROR_ENVELOPE if report.failed else EXIT_OK


def _cmd_new(name: str, lang: str, capabilities: Sequence[str], parent: Path) -> int:
    from .abi import LIBRARY_SUFFIX  # noqa: PLC0415
    from .scaffold.project import ScaffoldError, create_project  # noqa: PLC0415

    try:
        project = create_project(name, lang, capabilities, parent)
    except ScaffoldError as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created {project}/ ({lang} plugin); next:")
    print(f"  make -C {project} build     # build/{name}{LIBRARY_SUFFIX}")
    print(f"  make -C {project} check     # cliproxy-host check build/{name}{LIBRARY_SUFFIX}")
    print(f"  make -C {project} install   # into ../plugins/<os>/<arch>/ (PLUGINS_DIR=...)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return _cmd_check(args.path, args.json, args.isolated)
    if args.command == "new":
        return _cmd_new(args.name, args.lang, args.capabilities, args.dir)
    if args.command == "serve":
        try:
            return _cmd_serve(Path(args.config), args.host, args.port, args.log_level)
        except ConfigError as exc:
            print(f"cliproxy-host: {exc}", file=sys.stderr)
            return EXIT_USAGE
    request: Any = None
    if args.command == "call":
        text = sys.stdin.read() if args.request == "-" else args.request
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            print(f"cliproxy-host: request is not valid JSON: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        host = PluginHost.from_config(args.config)
    except ConfigError as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with host:
        if args.command == "plugins":
            return _cmd_plugins(host, args.json)
        return _cmd_call(host, args.plugin_id, args.method, request)


if __name__ == "__main__":
    sys.exit(main())
