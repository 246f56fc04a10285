"""The `cliproxy-host` command: list and call plugins, and serve the management API."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import orjson
import uvicorn

from .. import __version__
from ..abi import LIBRARY_SUFFIX
from ..config import HostConfig
from ..discovery import parse_name
from ..envelope import b64encode, ok
from ..errors import ConfigError, PluginError, PluginNotFound, PluginNotLoaded
from ..host.facade import PluginHost
from ..host.listing import plugins_off_reason
from ..host.service import HostService
from ..host.stream import PluginStream
from ..management.app import create_app
from ..management.auth import (
    KeyChecker,
    ManagementAuth,
    generate_key,
    key_from_env,
    protect_secret,
)
from ..management.plugin_routes import PluginRoutes
from ..management.views import plugin_list
from ..server.app import GATEWAY_PREFIX, create_server
from ..trust import read_image, sha256_hex
from ..web.header_limit import SERVER_HEAD_BYTES
from . import store as store_cli
from .signing import cmd_keygen, cmd_sign
from .table import print_plugins_table

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
    plugins.add_argument(
        "--json",
        action="store_true",
        help="print the list as GET /v0/management/plugins answers it, instead of a table",
    )
    plugins.add_argument(
        "--wide",
        action="store_true",
        help="every column (isolation, capabilities, path, the whole error), however wide",
    )

    call = sub.add_parser(
        "call",
        help="call a method of one plugin and print the envelope "
        "(executor.execute_stream: one JSON line per chunk, as it arrives)",
    )
    call.add_argument("plugin_id")
    call.add_argument("method")
    call.add_argument(
        "request",
        nargs="?",
        default="{}",
        help="the request, a JSON object (default {}; - reads stdin)",
    )
    call.add_argument("--config", default="config.yaml", help="YAML config file")

    serve = sub.add_parser("serve", help="run the plugins and the management REST API")
    serve.add_argument("--config", default="config.yaml", help="YAML config file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8317, help="port to listen on")
    serve.add_argument(
        "--config-store",
        default=os.environ.get("CLIPROXY_CONFIG_STORE") or None,
        metavar="postgresql://...",
        help="share the plugins config with other replicas through PostgreSQL (default:"
        " $CLIPROXY_CONFIG_STORE; unset: the YAML file alone)",
    )

    check = sub.add_parser(
        "check",
        help="run the ABI conformance suite against a plugin file",
        description="Run the ABI conformance suite against a plugin file. Exits 1 if a check "
        "fails. In-process by default: use --isolated for untrusted binaries.",
    )
    check.add_argument("path", type=Path, nargs="?", help="the plugin library (.so, .dylib, .dll)")
    check.add_argument(
        "--command",
        dest="program",  # `command` is the subcommand's name
        metavar="CMD",
        help='a plugin program instead of a library, e.g. --command "python3 my_plugin.py" '
        "(split like a shell would, run in this directory; docs/PROTOCOL.md)",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--isolated",
        action="store_true",
        help="run the plugin in a worker process, so a crash is reported, not fatal",
    )

    new = sub.add_parser(
        "new",
        help="write a plugin project (C, Rust or Python) that builds and passes check",
        description="Write NAME/, a plugin project with a Makefile (build, check, install).",
    )
    new.add_argument("name", help="the plugin ID, also the library's file name")
    new.add_argument(
        "--lang",
        required=True,
        choices=["c", "rust", "python"],
        help="C (CMake), Rust (cargo) or Python (a plugin program, docs/PROTOCOL.md)",
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
    store_cli.add_parser(sub)
    new.add_argument(
        "--wheel",
        action="store_true",
        help="Rust only: also build it as a Python wheel (maturin; `make wheel`) that the "
        "host finds through the cliproxy_host.plugins entry point",
    )

    keygen = sub.add_parser(
        "keygen",
        help="make an ed25519 key pair for signing plugins",
        description="Write a new private key (PEM) and print its public key, the form "
        "plugins.trusted-keys takes.",
    )
    keygen.add_argument(
        "--out", type=Path, default=Path("plugin-signing.pem"), help="the private key file"
    )

    sign = sub.add_parser(
        "sign",
        help="sign a plugin file: writes FILE.sig",
        description="Write FILE.sig, the detached ed25519 signature of FILE's bytes.",
    )
    sign.add_argument("path", type=Path, help="the plugin library to sign")
    sign.add_argument("--key", type=Path, required=True, help="the private key (keygen --out)")
    return parser


def _cmd_plugins(config: Path, as_json: bool, wide: bool) -> int:
    # The server's own wiring (its HostService, its plugin-route tables), so that --json is
    # the REST list itself, entry for entry, and the table shows what the server would.
    HostConfig.load(config)  # the service reads a missing file as empty: the CLI refuses it
    service = HostService(config, watch=False)
    # Never served: a gate without a key, that would refuse every request.
    app = create_app(service, ManagementAuth(KeyChecker(None), allow_remote=False))
    routes: PluginRoutes = app.state.plugin_routes
    service.start()
    try:
        service.wait_ready()
        if as_json:
            # No links: none that this process signed would open anything on a server.
            listing = plugin_list(service, routes, None)
            sys.stdout.write(
                orjson.dumps(listing.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode()
                + "\n"
            )
            return EXIT_OK
        infos = service.host.plugins()
        if infos:
            print_plugins_table(infos, wide=wide, file=sys.stdout)
        else:
            print(f"no plugins found under {service.config.plugins_dir()}")
        off = plugins_off_reason(service.config)
        if off is not None:
            # Whole, under the table: a narrow terminal cuts the rows' ERROR cells short.
            print(f"nothing loads: {off}")
        return EXIT_OK
    finally:
        service.stop()


# Methods whose answer is a stream: `call` prints it chunk by chunk.
STREAMED_METHODS: Final = frozenset({"executor.execute_stream"})


def _cmd_call(host: PluginHost, plugin_id: str, method: str, request: Any) -> int:
    try:
        if method in STREAMED_METHODS:
            return _print_stream(host.call_stream(plugin_id, method, request))
        result = host.call(plugin_id, method, request)
    except PluginError as exc:
        if isinstance(exc, PluginNotFound | PluginNotLoaded):
            print(f"cliproxy-host: {exc}", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.write(exc.to_envelope().decode() + "\n")
        return EXIT_ERROR_ENVELOPE
    sys.stdout.write(ok(result).decode() + "\n")
    return EXIT_OK


def _print_stream(stream: PluginStream) -> int:
    """One JSON line for the headers, then one per chunk as it arrives; 1 after an error chunk."""
    with stream:
        _line({"headers": stream.headers})
        for chunk in stream:
            line: dict[str, Any] = {"payload": b64encode(chunk.payload)}
            if chunk.error:
                line["error"] = chunk.error
                _line(line)
                return EXIT_ERROR_ENVELOPE
            _line(line)
    return EXIT_OK


def _line(value: object) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()  # each chunk as it arrives, also into a pipe


def _cmd_serve(
    config: Path, host: str, port: int, log_level: str, config_store: str | None = None
) -> int:
    service = HostService(config, protect_secret=protect_secret, config_store=config_store)
    remote = service.config.remote_management
    env_key = key_from_env()
    generated = None if (remote.secret_key or env_key) else generate_key()
    auth = ManagementAuth(
        KeyChecker(remote.secret_key, env_key, generated=generated),
        allow_remote=remote.allow_remote,
    )
    app = create_server(service, auth)
    shown = f"[{host}]" if ":" in host else host
    print(f"cliproxy-host {__version__}: management API on http://{shown}:{port}", flush=True)
    print(f"  plugins:  http://{shown}:{port}/v0/management/plugins", flush=True)
    print(f"  API docs: http://{shown}:{port}/docs", flush=True)
    print(f"  console:  http://{shown}:{port}/console (sign in with the key)", flush=True)
    keys = len(service.config.api_keys)
    print(
        f"  client API: http://{shown}:{port}{GATEWAY_PREFIX}/plugins/<id>/<method>, "
        f"{GATEWAY_PREFIX}/dispatch/<method>; "
        + (
            f"{keys} client key(s) from api-keys"
            if keys
            else "no api-keys configured: every /v1 request answers 401 until you add one"
        ),
        flush=True,
    )
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
        h11_max_incomplete_event_size=SERVER_HEAD_BYTES,
    )
    return EXIT_OK


def _cmd_check(path: Path | None, as_json: bool, isolated: bool, command: list[str] | None) -> int:
    # Imported on use, like .scaffold below: the other commands never need them.
    from ..check import run_checks  # noqa: PLC0415
    from .checklist import live_checklist  # noqa: PLC0415

    # With --json the live list goes to stderr, if that is a terminal: stdout stays JSON.
    shown = str(path) if command is None else shlex.join(command)
    with live_checklist(shown, sys.stdout if not as_json else sys.stderr) as progress:
        report = run_checks(path, command=command, isolated=isolated, progress=progress)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(report.table())
    if path is not None:  # a library (a program, --command, has no file to pin)
        _print_digest(path, sys.stderr if as_json else sys.stdout)
    return EXIT_ERROR_ENVELOPE if report.failed else EXIT_OK


def _print_digest(path: Path, out: TextIO) -> None:
    """The file's sha256, as plugins.configs.<id>.sha256 pins it."""
    try:
        digest = sha256_hex(read_image(path))
    except OSError:
        return  # the checks have said why the file cannot be read
    parsed = parse_name(path.name, LIBRARY_SUFFIX)
    plugin_id = parsed[0] if parsed else "<id>"
    print(f"sha256: {digest}  {path}", file=out)
    print(f"  pin it: plugins.configs.{plugin_id}.sha256: {digest}", file=out)


def _cmd_new(
    name: str, lang: str, capabilities: Sequence[str], parent: Path, *, wheel: bool = False
) -> int:
    from ..scaffold.project import ScaffoldError, create_project  # noqa: PLC0415

    try:
        project = create_project(name, lang, capabilities, parent, wheel=wheel)
    except ScaffoldError as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"created {project}/ ({lang} plugin); next:")
    if lang == "python":
        print(f'  make -C {project} check     # cliproxy-host check --command "python3 plugin.py"')
        print(f"  then set plugins.configs.{name}.command in the config (see {project}/README.md)")
        return EXIT_OK
    print(f"  make -C {project} build     # build/{name}{LIBRARY_SUFFIX}")
    print(f"  make -C {project} check     # cliproxy-host check build/{name}{LIBRARY_SUFFIX}")
    print(f"  make -C {project} install   # into ../plugins/<os>/<arch>/ (PLUGINS_DIR=...)")
    if wheel:
        print(f"  make -C {project} wheel     # or a wheel: pip install {project}/dist/*.whl")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        if (args.path is None) == (args.program is None):
            parser.error("check: give a plugin file or --command, not both")
        command = shlex.split(args.program) if args.program is not None else None
        return _cmd_check(args.path, args.json, args.isolated, command)
    if args.command == "new":
        return _cmd_new(args.name, args.lang, args.capabilities, args.dir, wheel=args.wheel)
    if args.command == "store":
        return store_cli.run(args)
    if args.command == "keygen":
        return cmd_keygen(args.out)
    if args.command == "sign":
        return cmd_sign(args.path, args.key)
    if args.command == "plugins":
        try:
            return _cmd_plugins(Path(args.config), args.json, args.wide)
        except ConfigError as exc:
            print(f"cliproxy-host: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "serve":
        try:
            return _cmd_serve(
                Path(args.config), args.host, args.port, args.log_level, args.config_store
            )
        except ConfigError as exc:
            print(f"cliproxy-host: {exc}", file=sys.stderr)
            return EXIT_USAGE
    text = sys.stdin.read() if args.request == "-" else args.request
    request, problem = _parse_request(text)
    if problem:
        # Before the host loads: a request that can never be valid reaches no plugin.
        print(f"cliproxy-host: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        host = PluginHost.from_config(args.config)
    except ConfigError as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with host:
        return _cmd_call(host, args.plugin_id, args.method, request)


def _parse_request(text: str) -> tuple[dict[str, Any], str | None]:
    """The request of `call`, or what is wrong with it (every ABI request is a JSON object)."""
    hint = "pass a JSON object, e.g. '{}' or '{\"Model\": \"m\"}' (- reads it from stdin)"
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return {}, f"request is not valid JSON ({exc}); {hint}"
    if not isinstance(request, dict):
        kind = "null" if request is None else type(request).__name__
        return {}, f"request is a JSON {kind}, not an object; {hint}"
    return request, None
