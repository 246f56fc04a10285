"""The YAML config: its schema, and the store that edits the file in place."""

from .schema import ConfigError, ConfigStore, HostConfig, HttpPolicy, PluginConfig

__all__ = ["ConfigError", "ConfigStore", "HostConfig", "HttpPolicy", "PluginConfig"]
