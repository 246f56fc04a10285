"""The host's YAML config as pydantic models, each plugin's config_yaml bytes, and the store
that writes the file back without losing the user's comments."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar, merge_attrib
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from ..discovery import is_valid_id, normalize_pin
from ..errors import ConfigError

__all__ = ["ConfigError", "ConfigStore", "HostConfig", "HttpPolicy", "PluginConfig"]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, extra="forbid")


class HttpPolicy(_Section):
    """The `http:` section: how host.http.do reaches the network on a plugin's behalf."""

    timeout_seconds: float = Field(default=30.0, gt=0)
    max_response_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Host name patterns (fnmatch wildcards, e.g. "*.example.com"); empty allows every host.
    allowed_hosts: list[str] = Field(default_factory=list)
    proxy_url: str | None = None


class RemoteManagement(_Section):
    """The `remote-management:` section: who may use the management API, with which key."""

    allow_remote: StrictBool = False
    # Plaintext or a bcrypt hash (`$2b$12$...`); the host replaces plaintext by its hash
    # whenever it writes the file. Kept out of repr so it never lands in a log.
    secret_key: str | None = Field(default=None, repr=False)
    # The Go host's control-panel settings: accepted so one file can serve both hosts,
    # ignored here (this host has no control panel).
    disable_control_panel: StrictBool = False
    disable_auto_update_panel: StrictBool = False
    panel_github_repository: str | None = None


class _KeepsKeyOrder(BaseModel):
    """A section that remembers the order of the user's keys, to hand them back that way."""

    _key_order: tuple[Any, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_key_order(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        section = handler(data)
        if isinstance(data, Mapping):
            section._key_order = tuple(data)
        return section

    def as_mapping(self) -> dict[Any, Any]:
        """The keys the user set, the host's and the plugin's, in the user's order."""
        values: dict[Any, Any] = {}
        for name, info in type(self).model_fields.items():
            if name in self.model_fields_set:
                value = getattr(self, name)
                values[info.alias or name] = (
                    value.as_mapping() if isinstance(value, _KeepsKeyOrder) else value
                )
        values.update(self.model_extra or {})
        ordered = {key: values.pop(key) for key in self._key_order if key in values}
        return ordered | values


PositiveStrictInt = Annotated[StrictInt, Field(gt=0)]


class StoreConfig(_KeepsKeyOrder):
    """`plugins.configs.<id>.store`: where the plugin's file comes from, and its pinned version."""

    # Other keys belong to whatever installs plugin files; the host only reads the pin.
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, extra="allow")

    version: str | None = None
    release_tag: str | None = None


class PluginConfig(_KeepsKeyOrder):
    """`plugins.configs.<id>`: the host's keys; every other key is the plugin's own."""

    model_config = ConfigDict(extra="allow")

    enabled: StrictBool = False
    priority: StrictInt = 0
    store: StoreConfig | None = None
    # How a new file of a loaded plugin takes over: "swap" loads and registers the new
    # library before the old one is retired (no gap); "restart" shuts the old one down
    # first, for plugins that hold exclusive resources.
    reload: Literal["swap", "restart"] = "swap"
    # Fault tolerance (see the README's "Isolation and limits"); None means the host default.
    isolation: Literal["inprocess", "process"] = "inprocess"
    timeout_ms: PositiveStrictInt | None = None
    max_concurrent_requests: PositiveStrictInt | None = None
    max_response_bytes: PositiveStrictInt | None = None
    memory_limit_mb: PositiveStrictInt | None = None  # isolated only (RLIMIT_AS)
    cpu_limit_s: PositiveStrictInt | None = None  # isolated only (RLIMIT_CPU)

    @property
    def pinned_version(self) -> str | None:
        """The only version of the plugin's file that may be loaded, if one is pinned."""
        if self.store is None:
            return None
        pin = normalize_pin(self.store.version or self.store.release_tag or "")
        return pin or None

    @property
    def settings(self) -> dict[str, Any]:
        """The plugin's own keys, in the order the user wrote them."""
        return dict(self.model_extra or {})

    def config_yaml(self) -> bytes:
        """The `config_yaml` bytes sent to the plugin (ABI.md section 3).

        The user's mapping in the user's key order, with `enabled` and `priority`
        appended when left out. The same config always gives the same bytes, so
        comparing them tells whether a plugin's config changed.
        """
        mapping = self.as_mapping()
        for key in _HOST_KEYS:
            mapping.setdefault(key, getattr(self, key))
        return _dump_yaml(mapping)


_HOST_KEYS: Final = ("enabled", "priority")


def _check_plugin_id(plugin_id: str) -> str:
    if not is_valid_id(plugin_id):
        raise PydanticCustomError("invalid_plugin_id", "invalid plugin ID")
    return plugin_id


PluginId = Annotated[str, AfterValidator(_check_plugin_id)]


def _null_is_empty(value: Any) -> Any:
    """A key written with nothing after it (`http:`) means its defaults."""
    return {} if value is None else value


class PluginsSection(_Section):
    """The `plugins:` section."""

    enabled: StrictBool = False
    dir: Annotated[str, StringConstraints(min_length=1)] = "plugins"
    registration_timeout_seconds: float = Field(default=10.0, gt=0)
    # Host defaults for every plugin. A call timeout applies to isolated plugins; an
    # in-process plugin is timed only when it sets timeout_ms itself, because timing an
    # in-process call means running it on another thread.
    timeout_ms: PositiveStrictInt = 30_000
    max_response_bytes: PositiveStrictInt = 64 * 1024 * 1024
    busy_wait_ms: PositiveStrictInt = 5_000  # how long a call waits for a concurrency slot
    fuse_crashes: PositiveStrictInt = 5  # crashes within fuse-window-seconds that fuse it
    fuse_window_seconds: float = Field(default=60.0, gt=0)
    breaker_failures: PositiveStrictInt = 5  # consecutive failures that open the circuit
    breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    # An isolated call polls for its answer this long before it sleeps (and the worker
    # for the next call): a wake-up costs more than a small call. 0 turns it off.
    spin_us: StrictInt = Field(default=50, ge=0, le=100_000)
    configs: dict[PluginId, PluginConfig] = Field(default_factory=dict)

    @field_validator("configs", mode="before")
    @classmethod
    def _empty_configs(cls, value: Any) -> Any:
        value = _null_is_empty(value)
        if isinstance(value, dict):
            return {key: _null_is_empty(entry) for key, entry in value.items()}
        return value


class HostConfig(BaseModel):
    """The whole config file. Top-level keys other than `plugins`, `http` and
    `remote-management` belong to other programs sharing the file: they are kept and ignored."""

    # populate_by_name: `HostConfig(remote_management=...)` must not land in model_extra.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    plugins: PluginsSection = Field(default_factory=PluginsSection)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    remote_management: RemoteManagement = Field(
        default_factory=RemoteManagement,
        validation_alias="remote-management",
        serialization_alias="remote-management",
    )

    @field_validator("plugins", "http", "remote_management", mode="before")
    @classmethod
    def _empty_sections(cls, value: Any) -> Any:
        return _null_is_empty(value)

    # The file the config came from; None in memory.
    _path: Path | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HostConfig:
        """Read and validate a YAML config file; an empty file gives the defaults."""
        source = os.fspath(path)
        file = _read_file(Path(path), source)
        if file is None:
            raise ConfigError(f"{source}: config file not found")
        document = _parse_yaml(YAML(typ="rt"), file.text, source)
        config = cls.from_mapping(document, source)
        config._path = Path(path).absolute()
        return config

    @classmethod
    def from_mapping(cls, data: Mapping[Any, Any] | None, source: str = "<memory>") -> HostConfig:
        """Validate config data already parsed; a ruamel document gives errors line numbers."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            line = _line_of(data, ())
            where = f"{source}:{line}" if line is not None else source
            raise ConfigError(
                f"{where}: expected a mapping at the top level, got {_describe(data)}"
            )
        plain = _plain(data)
        # Only string keys can be ours; anything else belongs to another program.
        ours = {key: value for key, value in plain.items() if isinstance(key, str)}
        try:
            config = cls.model_validate(ours, strict=True)
        except ValidationError as exc:
            problems = sorted(
                (_error_message(source, data, error) for error in exc.errors()),
                key=lambda problem: problem[0] or 0,
            )
            raise ConfigError("\n".join(text for _, text in problems)) from None
        return config

    def plugins_dir(self) -> Path:
        """The plugins directory; a relative `plugins.dir` is taken from the config's folder."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return base / self.plugins.dir

    def plugin_entry(self, plugin_id: str) -> PluginConfig:
        """A plugin's config entry, or the defaults when the config has none."""
        entry = self.plugins.configs.get(plugin_id)
        return entry if entry is not None else PluginConfig()

    def config_yaml(self, plugin_id: str) -> bytes:
        """The `config_yaml` bytes sent to a plugin: `enabled: false\npriority: 0\n`
        for one the config does not mention (ABI.md section 3)."""
        return self.plugin_entry(plugin_id).config_yaml()


def _plain(value: Any) -> Any:
    """ruamel's round-trip values as the plain Python types they stand for."""
    if isinstance(value, Mapping):
        # Keys must stay hashable: a complex key (`? [a, b]`) is kept as ruamel made it.
        return {_plain_scalar(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, TaggedScalar):
        return value.value
    # ScalarInt, ScalarFloat, ScalarBoolean and the quoted-string types are subclasses.
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _line_of(document: Any, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest part of `loc` present in a ruamel document."""
    line: int | None = None
    node = document
    if isinstance(node, CommentedMap | CommentedSeq):
        line = node.lc.line
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0]
            elif isinstance(node, CommentedSeq) and isinstance(part, int):
                line = node.lc.item(part)[0]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
        node = node[part]
    return None if line is None else line + 1


_EXPECTED: Final = {
    "bool_type": "expected true or false",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
}


def _describe(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence):
        return "a list"
    return repr(value)


def _error_message(source: str, document: Any, error: ErrorDetails) -> tuple[int | None, str]:
    """(line, message) for one validation error."""
    loc = list(error["loc"])
    kind = error["type"]
    value = error["input"]
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc.pop()
    if kind == "invalid_plugin_id":
        text = (
            f"invalid plugin ID {_describe(value)}: expected letters, digits, '.', '_' or '-',"
            " starting with a letter or digit, at most 128 characters"
        )
    elif is_key or kind == "invalid_key":
        text = f"expected a string key, got {_describe(value)}"
    elif kind == "extra_forbidden":
        text = f"unknown key; expected one of: {', '.join(_section_keys(loc[:-1]))}"
    elif kind in _EXPECTED:
        text = f"{_EXPECTED[kind]}, got {_describe(value)}"
        if kind == "string_type" and isinstance(value, int | float):
            text += " (put it in quotes)"
    elif kind == "greater_than":
        text = f"expected a number greater than {error.get('ctx', {}).get('gt', 0):g}, got {value}"
    elif kind == "string_too_short":
        text = "expected a non-empty string"
    else:
        text = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {_describe(value)}"
    line = _line_of(document, loc)
    where = f"{source}:{line}" if line is not None else source
    path = _key_path(document, loc)
    return line, f"{where}: {path}: {text}" if path else f"{where}: {text}"


def _key_path(data: Any, loc: Sequence[int | str]) -> str:
    """`plugins.configs.p.priority`, `http.allowed-hosts[1]`: a place in the config."""
    path = ""
    node = data
    for part in loc:
        is_index = isinstance(node, Sequence) and not isinstance(node, str)
        path += f"[{part}]" if is_index else f".{part}"
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return path.removeprefix(".")


def _section_keys(loc: Sequence[int | str]) -> list[str]:
    section: type[BaseModel]
    if list(loc) == ["plugins"]:
        section = PluginsSection
    elif list(loc) == ["http"]:
        section = HttpPolicy
    elif list(loc) == ["remote-management"]:
        section = RemoteManagement
    else:
        return []
    return [info.alias or name for name, info in section.model_fields.items()]


_Stamp = tuple[int, int, int, int]


def _stamp(status: os.stat_result) -> _Stamp:
    """What changes when anyone rewrites the file: a new inode (editors that save by
    renaming, and our own writes), or a new size or mtime (editors that write in place)."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class _FileText:
    text: str  # with "\n" line breaks, whatever the file used
    crlf: bool  # the file used "\r\n"; a rewrite keeps them
    stamp: _Stamp | None  # None: there is no file


def _read_file(path: Path, source: str) -> _FileText | None:
    """The file's text, or None if there is no such file."""
    try:
        with path.open("rb") as file:
            # Taken from the open file, so the stamp belongs to exactly these bytes.
            stamp = _stamp(os.fstat(file.fileno()))
            raw = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason})") from None
    crlf = "\r\n" in text
    return _FileText(text.replace("\r\n", "\n").replace("\r", "\n"), crlf, stamp)


def _parse_yaml(yaml: YAML, text: str, source: str) -> Any:
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise ConfigError(_yaml_error_message(source, exc)) from None
    except YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


def _yaml_error_message(source: str, exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = exc.problem or exc.context or "syntax error"
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    return f"{where}: invalid YAML: {problem}{context}"


class _PluginYamlRepresenter(RoundTripRepresenter):
    """Writes what plugins read: explicit nulls, and strings quoted wherever a YAML 1.1
    parser (libyaml, Go's yaml) would take them for something else, such as `yes` or `on`."""


_YAML11: Final = VersionedResolver(version=(1, 1))
_STR_TAG: Final = "tag:yaml.org,2002:str"


def _reads_as_no_string(text: str) -> bool:
    """Whether a YAML 1.1 parser would take `text`, written unquoted, for a non-string."""
    return str(_YAML11.resolve(ScalarNode, text, (True, False))) != _STR_TAG


def _represent_str(representer: RoundTripRepresenter, data: str) -> Any:
    if "\n" in data:
        style: str | None = "|"
    elif _reads_as_no_string(data):
        style = "'"
    else:
        style = None
    return representer.represent_scalar(_STR_TAG, data, style=style)


def _represent_none(representer: RoundTripRepresenter, data: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


_PluginYamlRepresenter.add_representer(str, _represent_str)
_PluginYamlRepresenter.add_representer(type(None), _represent_none)


def _dump_yaml(mapping: Mapping[Any, Any]) -> bytes:
    yaml = YAML(typ="rt")
    yaml.Representer = _PluginYamlRepresenter
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.width = sys.maxsize  # never fold a long string over lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    stream = io.StringIO()
    yaml.dump(mapping, stream)
    return stream.getvalue().encode("utf-8")


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
        # What was last read or written; a missing file reads as an empty one.
        self._file = _read_file(self._path, self._source) or _FileText("", False, None)
        self._yaml, self._document, self._config = self._parse(self._file)

    @property
    def config(self) -> HostConfig:
        """The current config: a new object after every change, never changed itself."""
        return self._config

    def replace_plugin_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig:
        """Make `settings` the whole of `plugins.configs.<plugin_id>` (a PUT)."""

        def edit(document: CommentedMap) -> None:
            _replace_mapping(_plugin_entry(document, plugin_id), settings)

        return self._change(edit)

    def patch_plugin_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig:
        """Merge `patch` into `plugins.configs.<plugin_id>` key by key; None deletes a key."""

        def edit(document: CommentedMap) -> None:
            entry = _plugin_entry(document, plugin_id)
            for key, value in patch.items():
                if value is not None:
                    _put(entry, key, value)
                elif key in entry:
                    _delete(entry, key)

        return self._change(edit)

    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig:
        """Set `plugins.configs.<plugin_id>.enabled`, making the entry if there is none."""

        def edit(document: CommentedMap) -> None:
            _put(_plugin_entry(document, plugin_id), "enabled", enabled)

        return self._change(edit)

    def delete_plugin(self, plugin_id: str) -> HostConfig:
        """Drop `plugins.configs.<plugin_id>` with the comment lines above it, if it is there."""

        def edit(document: CommentedMap) -> None:
            plugins = document.get("plugins")
            configs = plugins.get("configs") if isinstance(plugins, CommentedMap) else None
            if isinstance(configs, CommentedMap) and plugin_id in configs:
                _delete(_section(_section(document, "plugins"), "configs"), plugin_id)

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

    def _reload(self) -> HostConfig:
        file = _read_file(self._path, self._source)
        if file is None:
            raise ConfigError(f"{self._source}: config file not found")
        self._yaml, self._document, self._config = self._parse(file)
        self._file = file
        return self._config

    def _parse(self, file: _FileText) -> tuple[YAML, CommentedMap, HostConfig]:
        yaml = _round_trip_yaml(file.text)
        document = _parse_yaml(yaml, file.text, self._source)
        config = self._snapshot(document)
        if not isinstance(document, CommentedMap):
            return yaml, _empty_document(file.text), config
        _attach_comments_to_keys(document, top=True)
        return yaml, document, config

    def _snapshot(self, data: Mapping[Any, Any] | None) -> HostConfig:
        config = HostConfig.from_mapping(data, self._source)
        config._path = self._path.absolute()
        return config

    def _change(self, edit: Callable[[CommentedMap], None]) -> HostConfig:
        with self._lock:
            # Edited by hand since the last read or write: start from the edit. (A deleted
            # file is not read: the change writes it back.)
            if _stamp_of(self._path) not in (None, self._file.stamp):
                self._reload()
            try:
                edit(self._document)
                self._protect(self._document)
                # ruamel writes an empty document as `{}`; there is nothing to write then.
                text = self._dump() if self._document else self._file.text
                if text == self._file.text:
                    return self._config
                # Without line numbers: they would point into a file that is not written.
                config = self._snapshot(_plain(self._document))
                data = text.replace("\n", "\r\n") if self._file.crlf else text
                stamp = _write_atomically(self._path, data.encode("utf-8"))
            except BaseException:
                # The edit may be half applied: go back to what the file holds.
                self._yaml, self._document, _ = self._parse(self._file)
                raise
            self._file = _FileText(text, self._file.crlf, stamp)
            self._config = config
            return config

    def _protect(self, document: CommentedMap) -> None:
        section = document.get("remote-management")
        if self._protect_secret is None or not isinstance(section, CommentedMap):
            return
        key = section.get("secret-key")
        if not isinstance(key, str) or not key:  # "" is no key: nothing to protect
            return
        try:
            protected = self._protect_secret(str(key))
        except ValueError as exc:
            raise ConfigError(f"{self._source}: remote-management.secret-key: {exc}") from None
        _put(_section(document, "remote-management"), "secret-key", protected)

    def _dump(self) -> str:
        stream = io.StringIO()
        self._yaml.dump(self._document, stream)
        return stream.getvalue()


def _stamp_of(path: Path) -> _Stamp | None:
    try:
        return _stamp(path.stat())
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes) -> _Stamp:
    """Replace the file's bytes so that a reader sees the old file or the new one, never a
    mix, and a crash leaves one of the two on disk. Returns the new file's stamp."""
    # Through a symlink (a config kept in a dotfiles repo): the link stays, its target changes.
    target = path.resolve()
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            os.chmod(temp, mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            # The rename keeps inode, size and mtime: this is the stamp the file will have.
            stamp = _stamp(os.fstat(file.fileno()))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(target.parent)
    return stamp


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable. Windows has no directory handles to flush, and some
    file systems refuse; the new file is in place either way, so that is no error."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _round_trip_yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.default_flow_style = False  # new mappings and lists are written as blocks
    yaml.allow_unicode = True
    yaml.width = sys.maxsize  # never fold a long line the user wrote on one
    mapping, sequence, offset = _indentation(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


_KEY_OPENS_BLOCK: Final = re.compile(r"[^#]*:(\s+#.*)?")


def _indentation(text: str) -> tuple[int, int, int]:
    """ruamel's (mapping, sequence, offset) indents as the file uses them, since ruamel
    writes one style for the whole file; where the file does not show, the host's style."""
    mapping: int | None = None
    dash: tuple[int, int] | None = None
    opener: int | None = None  # the indent of the previous line, if it was a bare `key:`
    for line in text.splitlines():
        content = line.lstrip(" ")
        if not content or content.startswith("#"):
            continue
        indent = len(line) - len(content)
        is_item = content.startswith("- ")
        if opener is not None:
            if is_item and dash is None:
                item = content[2:]
                spaces = len(item) - len(item.lstrip(" "))
                dash = (indent - opener, indent + 2 + spaces - opener)
            elif not is_item and mapping is None and indent > opener:
                mapping = indent - opener
        opener = indent if not is_item and _KEY_OPENS_BLOCK.fullmatch(content.rstrip()) else None
    mapping = mapping or 2
    offset, sequence = dash or (mapping, mapping + 2)
    return mapping, sequence, offset


def _empty_document(text: str) -> CommentedMap:
    """The document for a file with no mapping yet; comment lines in it are kept on top."""
    document = CommentedMap()
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(line.lstrip().startswith("#") for line in lines):
        header = text if text.endswith("\n") else text + "\n"
        document.ca.comment = [None, [CommentToken(header, CommentMark(0))]]
    return document


# ruamel attaches a comment line to whatever comes before it, often the last value of the
# previous entry: deleting or replacing that entry would take the next one's comment with
# it. So after reading, comment lines are moved to the key they stand above.


def _attach_comments_to_keys(mapping: CommentedMap, *, top: bool) -> None:
    keys = _own_keys(mapping)
    for index, key in enumerate(keys):
        value = mapping[key]
        if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
            _adopt_leading_comments(mapping, key, value)
            _attach_comments_to_keys(value, top=False)
        is_last = index + 1 == len(keys)
        # The lines after a nested mapping's last value stand above its parent's next key.
        lines = "" if is_last and not top else _take_trailing_lines(mapping, key)
        if not lines:
            continue
        token = CommentToken(lines, CommentMark(0))
        if is_last:  # the end of the file
            if mapping.ca.comment is None:
                mapping.ca.comment = [None, None]  # ruamel writes `end` only next to these
            mapping.ca.end = [token, *(mapping.ca.end or [])]
        else:
            _prepend_comments(mapping, keys[index + 1], [token])


def _own_keys(mapping: CommentedMap) -> list[Any]:
    """The keys written in this mapping, not those a merge key (`<<: *base`) brings in."""
    return [key for key, _ in mapping.non_merged_items()]


def _adopt_leading_comments(parent: CommentedMap, key: Any, child: CommentedMap) -> None:
    """Comment lines between `key:` and the child's first key belong to that first key."""
    slots = parent.ca.items.get(key)
    from_parent = slots[3] if slots is not None and len(slots) > 3 else None
    from_child = child.ca.comment[1] if child.ca.comment else None
    # ruamel usually keeps the same list in both places.
    tokens = [*(from_parent or []), *((from_child or []) if from_child is not from_parent else [])]
    first = _own_keys(child)[:1]
    if not tokens or not first:
        return
    if from_parent:
        slots[3] = None
    if from_child:
        child.ca.comment[1] = None
    _prepend_comments(child, first[0], tokens)


def _trailing_slot(container: CommentedMap | CommentedSeq, key: Any) -> tuple[Any, int, Any]:
    """Where ruamel keeps the comment token that ends the value at container[key]: the
    slots, the index in them, and the value the token follows."""
    value = container[key]
    if isinstance(value, CommentedSeq) and value and not value.fa.flow_style():
        return _trailing_slot(value, len(value) - 1)
    if isinstance(value, CommentedMap) and not value.fa.flow_style() and (keys := _own_keys(value)):
        return _trailing_slot(value, keys[-1])
    slots = container.ca.items.get(key)
    index = 2 if isinstance(container, CommentedMap) else 0
    return (slots if slots is not None and len(slots) > index else None), index, value


def _take_trailing_lines(mapping: CommentedMap, key: Any) -> str:
    """Remove and return the whole lines after the value (and its end-of-line comment)."""
    slots, index, value = _trailing_slot(mapping, key)
    token = slots[index] if slots is not None else None
    if token is None:
        return ""
    text = str(token.value)
    if isinstance(value, LiteralScalarString | FoldedScalarString):
        # A block scalar ends its own line, so the token is whole lines; ruamel keeps the
        # first one's indent as the token's column.
        slots[index] = None
        return text if text.startswith("\n") else " " * token.start_mark.column + text
    line, newline, rest = text.partition("\n")
    if rest:
        token.value = line + newline
    return rest


def _prepend_comments(mapping: CommentedMap, key: Any, tokens: list[Any]) -> None:
    slots = mapping.ca.items.setdefault(key, [None, None, None, None])
    slots[1] = [*tokens, *(slots[1] or [])]


# Changes to the document. Each keeps the nodes it does not need to replace, since the
# user's comments, quoting and layout live on them.


def _plugin_entry(document: CommentedMap, plugin_id: str) -> CommentedMap:
    return _section(_section(_section(document, "plugins"), "configs"), plugin_id)


def _section(parent: CommentedMap, key: str) -> CommentedMap:
    """parent[key] as a mapping this change may edit in place; made when missing or null."""
    value = parent.get(key)
    if isinstance(value, CommentedMap) and not _is_shared(value):
        if not value:
            value.fa.set_block_style()  # a `{}` written by hand grows as a block
        return value
    # A mapping that other places reach through an anchor gets a copy of its own, so that
    # the change stays where it was asked for.
    section = _yaml_mapping(_plain(value) if isinstance(value, Mapping) else {})
    parent[key] = section
    return section


def _is_shared(node: CommentedMap) -> bool:
    """Whether the node carries an anchor (`&name`) or merges one in (`<<: *name`)."""
    anchor = node.yaml_anchor()
    return (anchor is not None and anchor.value is not None) or bool(
        getattr(node, merge_attrib, None)
    )


def _replace_mapping(target: CommentedMap, values: Mapping[Any, Any]) -> None:
    if not target:
        target.fa.set_block_style()
    for key in [key for key in target if key not in values]:
        _delete(target, key)
    for key, value in values.items():
        _put(target, key, value)
    if list(target) != list(values):
        for key in values:
            target.move_to_end(key)


def _put(mapping: CommentedMap, key: Any, value: Any) -> None:
    """Set mapping[key], keeping the node there wherever it already holds the value."""
    if key not in mapping:
        mapping[_yaml_key(key)] = _to_yaml(value)
        return
    current = mapping[key]
    if isinstance(value, Mapping) and isinstance(current, CommentedMap) and not _is_shared(current):
        _replace_mapping(current, value)
    elif not _same(current, value):
        keeps_quotes = isinstance(value, str) and "\n" not in value and isinstance(current, _QUOTED)
        mapping[key] = type(current)(value) if keeps_quotes else _to_yaml(value)


def _delete(mapping: CommentedMap, key: Any) -> None:
    """Remove a key with the comment lines above it (attached to it when read)."""
    was_first = next(iter(mapping)) == key
    del mapping[key]
    mapping.ca.items.pop(key, None)
    if was_first and mapping:
        # The next key is first now: blank lines that parted it from the removed key go.
        tokens = (mapping.ca.items.get(next(iter(mapping))) or [None, None])[1] or []
        while tokens and not str(tokens[0].value).strip():
            tokens.pop(0)
        if tokens:
            tokens[0].value = str(tokens[0].value).lstrip("\n")


def _same(old: Any, new: Any) -> bool:
    """Whether `old`, from the document, already is `new`: equal, with the same types."""
    if isinstance(new, Mapping):
        return (
            isinstance(old, Mapping)
            and list(old) == list(new)
            and all(_same(old[key], new[key]) for key in new)
        )
    if _is_list(new):
        return _is_list(old) and len(old) == len(new) and all(map(_same, old, new))
    old = _plain_scalar(old)
    return type(old) is type(new) and bool(old == new)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


_QUOTED: Final = (SingleQuotedScalarString, DoubleQuotedScalarString)


def _to_yaml(value: Any) -> Any:
    """Plain Python as ruamel's round-trip types: mappings and lists written as blocks,
    strings quoted wherever a YAML 1.1 parser (a plugin's, another program's) would take
    them for something else, and multi-line strings as literal blocks."""
    if isinstance(value, Mapping):
        return _yaml_mapping(value)
    if isinstance(value, list | tuple):
        return CommentedSeq(_to_yaml(item) for item in value)
    if isinstance(value, str):
        return LiteralScalarString(value) if "\n" in value else _yaml_key(value)
    if value is None or isinstance(value, bool | int | float | datetime.date):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} to the config file: {value!r}")


def _yaml_mapping(values: Mapping[Any, Any]) -> CommentedMap:
    mapping = CommentedMap()
    for key, value in values.items():
        mapping[_yaml_key(key)] = _to_yaml(value)
    return mapping


def _yaml_key(key: Any) -> Any:
    if isinstance(key, str) and _reads_as_no_string(key):
        return SingleQuotedScalarString(key)
    return key
