"""`cliproxy-host store list` and `store install`: the plugin store from the command line,
editing the config file and the plugins dir directly (a running server's watcher applies
the change)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

import orjson

from ..config import ConfigStore, HostConfig
from ..errors import ConfigError, PluginError, StoreSourceRequired
from ..management.auth import protect_secret
from ..store.install import FileCommitter, InstallRequest, StoreInstaller
from ..store.listing import store_list

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def add_parser(sub: Any) -> None:
    """The `store` command and its two subcommands, on the main parser's subparsers."""
    store = sub.add_parser("store", help="list and install plugins from the plugin store")
    verbs = store.add_subparsers(dest="store_command", required=True)
    listing = verbs.add_parser("list", help="every plugin the store sources list")
    listing.add_argument("--config", default="config.yaml", help="YAML config file")
    listing.add_argument(
        "--json", action="store_true", help="print GET /v0/management/plugin-store's body"
    )
    install = verbs.add_parser(
        "install",
        help="download, verify and install a plugin, and enable it in the config",
    )
    install.add_argument("plugin_id")
    install.add_argument("--version", help="the version to install (default: the latest)")
    install.add_argument("--source", help="the store source's ID, when several list the plugin")
    install.add_argument(
        "--isolation",
        choices=["process", "inprocess"],
        help="how the plugin runs (default: process)",
    )
    install.add_argument("--config", default="config.yaml", help="YAML config file")


def run(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    try:
        HostConfig.load(config_path)  # a missing file is refused, not read as empty
        if args.store_command == "list":
            return _list(HostConfig.load(config_path), args.json)
        return _install(config_path, args)
    except StoreSourceRequired as exc:
        ids = ", ".join(s["id"] for s in exc.sources)
        print(f"cliproxy-host: {exc.message} (--source {ids})", file=sys.stderr)
        return EXIT_FAILED
    except ConfigError as exc:
        print(f"cliproxy-host: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PluginError as exc:
        print(f"cliproxy-host: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED


def _list(config: HostConfig, as_json: bool) -> int:
    body = store_list(config)
    if as_json:
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    for error in body.get("source_errors", []):
        print(f"cannot read {error['source_url']}: {error['message']}", file=sys.stderr)
    for plugin in body["plugins"]:
        installed = plugin["installed_version"] or ("yes" if plugin["installed"] else "-")
        update = "  (update available)" if plugin["update_available"] else ""
        print(
            f"{plugin['id']:<24} {plugin['version']:<12} installed: {installed:<10}"
            f" {plugin['source_id']}  {plugin['description']}{update}"
        )
    return EXIT_OK


def _install(config_path: Path, args: argparse.Namespace) -> int:
    committer = FileCommitter(ConfigStore(config_path, protect_secret=protect_secret))
    request = InstallRequest(
        args.plugin_id, version=args.version, source=args.source, isolation=args.isolation
    )
    installed = StoreInstaller(committer).install(request)
    print(
        f"installed {installed.plugin_id} {installed.version} at {installed.path}"
        f" (isolation: {installed.isolation}); {config_path} enables it"
    )
    return EXIT_OK
