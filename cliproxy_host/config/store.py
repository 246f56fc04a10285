"""ConfigStore: the running server's config file, changed in place and written atomically."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from ..errors import ConfigError
from .comments import attach_comments_to_keys
from .files import (
    FileText,
    read_existing_file,
    read_file,
    remove_stale_temps,
    stamp_of,
    write_atomically,
)
from .problems import yaml_name
from .schema import MAX_CONFIG_FILE_BYTES, MAX_NESTING_DEPTH, HostConfig, RemoteManagement
from .yamledit import (
    delete,
    empty_document,
    parse_yaml,
    plain,
    put,
    replace_mapping,
    round_trip_yaml,
    section,
)

log = logging.getLogger(__name__)


class ConfigStore:
    """The config file of the running server, and its only writer.

    A change is made to ruamel's round-trip document of the file, so the user's comments,
    key order, quoting and other programs' sections stay as they are; the document is
    validated as a whole before anything is written, then written atomically. Changes are
    serialised by a lock. If the file was edited by hand since the store last read it, it
    is read again before a change is applied, so a hand edit is never overwritten (an
    invalid one makes the change fail until it is fixed).

    A missing file gives the defaults, and the first change creates it with mode 0o600 (it
    may hold a key's hash). If the file disappears later, the store keeps what it read: the
    next change writes it back, and `reload()` refuses, since a deleted config is more
    likely a mistake or an editor's save in progress than a wish to drop everything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        protect_secret: Callable[[str], str] | None = None,
    ) -> None:
        """protect_secret turns `remote-management.secret-key` into what may be stored
        (a hash), returning a value already protected unchanged; it runs on every write."""
        self._path = Path(path)
        self._source = os.fspath(path)
        self._protect_secret = protect_secret
        self._lock = threading.Lock()
        for temp in remove_stale_temps(self._path):
            log.info("removed %s, left by a write to %s that did not finish", temp, self._source)
        # What was last read or written; a missing file reads as an empty one.
        self._file = read_file(self._path, self._source, limit=MAX_CONFIG_FILE_BYTES) or FileText(
            "", False, None
        )
        self._yaml, self._document, self._config = self._parse(self._file)

    @property
    def config(self) -> HostConfig:
        """The current config: a new object after every change, never changed itself."""
        return self._config

    def replace_plugin_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig:
        """Make `settings` the whole of `plugins.configs.<plugin_id>` (a PUT)."""

        def edit(document: CommentedMap) -> None:
            replace_mapping(_plugin_entry(document, plugin_id), settings)

        return self._change(edit)

    def patch_plugin_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig:
        """Merge `patch` into `plugins.configs.<plugin_id>` key by key; None deletes a key."""

        def edit(document: CommentedMap) -> None:
            entry = _plugin_entry(document, plugin_id)
            for key, value in patch.items():
                if value is not None:
                    put(entry, key, value)
                elif key in entry:
                    delete(entry, key)

        return self._change(edit)

    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig:
        """Set `plugins.configs.<plugin_id>.enabled`, making the entry if there is none."""

        def edit(document: CommentedMap) -> None:
            put(_plugin_entry(document, plugin_id), "enabled", enabled)

        return self._change(edit)

    def delete_plugin(self, plugin_id: str) -> HostConfig:
        """Drop `plugins.configs.<plugin_id>` with the comment lines above it, if it is there."""

        def edit(document: CommentedMap) -> None:
            plugins = document.get("plugins")
            configs = plugins.get("configs") if isinstance(plugins, CommentedMap) else None
            if isinstance(configs, CommentedMap) and plugin_id in configs:
                delete(_configs(document), plugin_id)

        return self._change(edit)

    def protect_secret_now(self) -> HostConfig:
        """Store a plaintext `remote-management.secret-key` protected (hashed) right away,
        as the Go host does at start-up; writes nothing when there is nothing to protect."""
        return self._change(lambda document: None)

    def reload(self) -> HostConfig:
        """Read the file again after a hand edit. If it is now invalid or gone, raise
        ConfigError and keep the current config."""
        with self._lock:
            return self._reload()

    def reload_if_changed(self) -> HostConfig | None:
        """Like reload(), but None without reading when the file is the one the store
        last read or wrote (same stamp): the echo of its own write is no edit."""
        with self._lock:
            current = stamp_of(self._path)
            if current is not None and current == self._file.stamp:
                return None
            return self._reload()

    def _reload(self) -> HostConfig:
        file = read_existing_file(self._path, self._source, limit=MAX_CONFIG_FILE_BYTES)
        self._yaml, self._document, self._config = self._parse(file)
        self._file = file
        return self._config

    def _parse(self, file: FileText) -> tuple[YAML, CommentedMap, HostConfig]:
        yaml = round_trip_yaml(file.text)
        document = parse_yaml(yaml, file.text, self._source, max_depth=MAX_NESTING_DEPTH)
        config = self._snapshot(document)
        if not isinstance(document, CommentedMap):
            return yaml, empty_document(file.text), config
        attach_comments_to_keys(document, top=True)
        return yaml, document, config

    def _snapshot(self, data: Mapping[Any, Any] | None) -> HostConfig:
        config = HostConfig.from_mapping(data, self._source)
        config._path = self._path.absolute()
        return config

    def _change(self, edit: Callable[[CommentedMap], None]) -> HostConfig:
        with self._lock:
            # Edited by hand since the last read or write: start from the edit. (A deleted
            # file is not read: the change writes it back.)
            if stamp_of(self._path) not in (None, self._file.stamp):
                self._reload()
            try:
                edit(self._document)
                self._protect(self._document)
                # ruamel writes an empty document as `{}`; there is nothing to write then.
                text = self._dump() if self._document else self._file.text
                if text == self._file.text:
                    return self._config
                # Without line numbers: they would point into a file that is not written.
                config = self._snapshot(plain(self._document))
                data = text.replace("\n", "\r\n") if self._file.crlf else text
                raw = data.encode("utf-8")
                if len(raw) > MAX_CONFIG_FILE_BYTES:
                    raise ConfigError(
                        f"{self._source}: the change would make the config file"
                        f" {len(raw)} bytes, more than the {MAX_CONFIG_FILE_BYTES} allowed"
                        " (MAX_CONFIG_FILE_BYTES): nothing written"
                    )
                stamp = write_atomically(self._path, raw)
            except BaseException:
                # The edit may be half applied: go back to what the file holds.
                self._yaml, self._document, _ = self._parse(self._file)
                raise
            self._file = FileText(text, self._file.crlf, stamp)
            self._config = config
            return config

    def _protect(self, document: CommentedMap) -> None:
        management = document.get(_SECRET_SECTION)
        if self._protect_secret is None or not isinstance(management, CommentedMap):
            return
        key = management.get(_SECRET_KEY)
        if not isinstance(key, str) or not key:  # "" is no key: nothing to protect
            return
        try:
            protected = self._protect_secret(str(key))
        except ValueError as exc:
            raise ConfigError(f"{self._source}: {_SECRET_SECTION}.{_SECRET_KEY}: {exc}") from None
        put(section(document, _SECRET_SECTION), _SECRET_KEY, protected)

    def _dump(self) -> str:
        stream = io.StringIO()
        self._yaml.dump(self._document, stream)
        return stream.getvalue()


# Where the management key is in the file (`remote-management.secret-key`), as the schema
# spells it.
_SECRET_SECTION: Final = yaml_name(
    "remote_management", HostConfig.model_fields["remote_management"]
)
_SECRET_KEY: Final = yaml_name("secret_key", RemoteManagement.model_fields["secret_key"])


def _configs(document: CommentedMap) -> CommentedMap:
    """`plugins.configs` of the document, made if missing, to edit in place."""
    return section(section(document, "plugins"), "configs")


def _plugin_entry(document: CommentedMap, plugin_id: str) -> CommentedMap:
    """`plugins.configs.<plugin_id>` of the document, made if missing, to edit in place."""
    return section(_configs(document), plugin_id)
