"""The YAML config: its schema, and the store that edits the file in place.

schema: the pydantic models · problems: validation errors as
messages with file, line and key · store: ConfigStore · yamledit and comments: round-trip
YAML that keeps the user's comments · files: reading and atomic writing.
"""

from ..errors import ConfigError
from .schema import (
    HostConfig,
    HttpPolicy,
    PluginConfig,
    PluginsSection,
    RemoteManagement,
    StoreConfig,
)
from .store import ConfigStore

__all__ = [
    "ConfigError",
    "ConfigStore",
    "HostConfig",
    "HttpPolicy",
    "PluginConfig",
    "PluginsSection",
    "RemoteManagement",
    "StoreConfig",
]
