"""The YAML config: its schema, and the store that edits the file in place.

schema: the pydantic models and the host-owned keys · problems: validation errors as
messages with file, line and key · store: ConfigStore · yamledit and comments: round-trip
YAML that keeps the user's comments · files: reading and atomic writing.
"""

from ..errors import ConfigError
from .schema import (
    FILE_ONLY_KEYS,
    HOST_KEYS,
    HostConfig,
    HttpPolicy,
    PluginConfig,
    PluginsSection,
    RemoteManagement,
    StoreConfig,
    store_url_allowed,
)
from .store import ConfigStore

__all__ = [
    "FILE_ONLY_KEYS",
    "HOST_KEYS",
    "ConfigError",
    "ConfigStore",
    "HostConfig",
    "HttpPolicy",
    "PluginConfig",
    "PluginsSection",
    "RemoteManagement",
    "StoreConfig",
    "store_url_allowed",
]
