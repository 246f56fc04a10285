"""Run inside the throwaway venv: the host there finds the wheel's plugin and calls it.

argv: the plugin ID and a work dir; prints one JSON object per case.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import orjson
from ruamel.yaml import YAML

from cliproxy_host.abi import LIBRARY_SUFFIX
from cliproxy_host.discovery import platform_tag
from cliproxy_host.host.facade import PluginHost


def run(plugin_id: str, work: Path, case: str) -> dict[str, object]:
    config = work / f"{case}.yaml"
    doc = {
        "plugins": {"enabled": True, "dir": "plugins", "configs": {plugin_id: {"enabled": True}}}
    }
    with config.open("w") as fh:
        YAML().dump(doc, fh)
    with PluginHost.from_config(config) as host:
        [info] = [i for i in host.plugins() if i.id == plugin_id]
        answer = host.call(plugin_id, "executor.identifier", {})
        return {"path": info.path, "version": info.version, "identifier": answer["identifier"]}


def main() -> None:
    plugin_id, work = sys.argv[1], Path(sys.argv[2])
    arch_dir = work / "plugins" / "/".join(platform_tag())
    arch_dir.mkdir(parents=True)
    results = {"wheel only": run(plugin_id, work, "wheel-only")}
    # A file of the same ID under plugins/ competes by the same rules: by version ...
    wheel_library = Path(str(results["wheel only"]["path"]))
    older = arch_dir / f"{plugin_id}-v0.0.9{LIBRARY_SUFFIX}"
    shutil.copyfile(wheel_library, older)
    results["older file"] = run(plugin_id, work, "older-file")
    newer = arch_dir / f"{plugin_id}-v0.2.0{LIBRARY_SUFFIX}"
    shutil.copyfile(wheel_library, newer)
    results["newer file"] = run(plugin_id, work, "newer-file")
    older.unlink()
    newer.unlink()
    # ... and between equal versions the plugins dir comes first in search order.
    same = arch_dir / f"{plugin_id}-v0.1.0{LIBRARY_SUFFIX}"
    shutil.copyfile(wheel_library, same)
    results["same version"] = run(plugin_id, work, "same-version")
    sys.stdout.write(orjson.dumps(results).decode() + "\n")


if __name__ == "__main__":
    main()
