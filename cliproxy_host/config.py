"""The host's YAML config as pydantic models, and each plugin's config_yaml bytes."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Self

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
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import VersionedResolver

from .discovery import is_valid_id, normalize_pin


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


class ConfigError(ValueError):
    """The config file is missing, is not YAML, or does not validate; the message says where."""


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
    configs: dict[PluginId, PluginConfig] = Field(default_factory=dict)

    @field_validator("configs", mode="before")
    @classmethod
    def _empty_configs(cls, value: Any) -> Any:
        value = _null_is_empty(value)
        if isinstance(value, dict):
            return {key: _null_is_empty(entry) for key, entry in value.items()}
        return value


class HostConfig(BaseModel):
    """The whole config file. Top-level keys other than `plugins` and `http` belong to
    other programs sharing the file: they are kept and ignored."""

    model_config = ConfigDict(extra="allow")

    plugins: PluginsSection = Field(default_factory=PluginsSection)
    http: HttpPolicy = Field(default_factory=HttpPolicy)

    @field_validator("plugins", "http", mode="before")
    @classmethod
    def _empty_sections(cls, value: Any) -> Any:
        return _null_is_empty(value)

    # The file the config came from (None in memory), and ruamel's round-trip document
    # as read, so that a later save can keep the user's comments and layout.
    _path: Path | None = PrivateAttr(default=None)
    _document: Any = PrivateAttr(default=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HostConfig:
        """Read and validate a YAML config file; an empty file gives the defaults."""
        source = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
        try:
            document = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            raise ConfigError(_yaml_error_message(source, exc)) from None
        except YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML: {exc}") from None
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
        config._document = data if isinstance(data, CommentedMap) else None
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
    else:
        return []
    return [info.alias or name for name, info in section.model_fields.items()]


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


def _represent_str(representer: RoundTripRepresenter, data: str) -> Any:
    if "\n" in data:
        style: str | None = "|"
    elif str(_YAML11.resolve(ScalarNode, data, (True, False))) != _STR_TAG:
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
