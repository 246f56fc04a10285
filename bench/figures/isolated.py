"""Where isolated mode slots in: the plugin config that turns it on, once the host has it.

An operator runs a plugin in a worker process with ``isolation: process`` in its entry
under ``plugins.configs`` (cliproxy_host/isolated.py). When the installed cliproxy_host
has that option, figure 1 loads a second host with it and measures it beside the
in-process one; until then its rows say "not yet available".
"""

from __future__ import annotations

import importlib
from typing import Any

from cliproxy_host.config import PluginConfig

NOT_YET = "isolated mode is not implemented yet (cliproxy_host/isolated.py)"


def isolated_config() -> tuple[dict[str, Any] | None, str]:
    """(the plugin config entries that select isolated mode, or None and why not)."""
    try:
        importlib.import_module("cliproxy_host.isolated")
    except ModuleNotFoundError:
        return None, NOT_YET
    except Exception as exc:  # a half-written module must not break the other figures
        return None, f"cliproxy_host.isolated failed to import: {exc}"
    if "isolation" not in PluginConfig.model_fields:
        return None, "the plugin config has no `isolation` option yet"
    return {"isolation": "process"}, ""
