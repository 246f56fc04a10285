"""Registration results as capability records, the dispatch order, and snapshots to hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..abi import CAPABILITY_METHODS, QUALIFIER_FLAGS, SCHEMA_VERSION
from ..backends.protocol import GuardedPlugin
from ..config import HOST_KEYS
from ..errors import InvalidRegistration, PluginLoadError
from ..observe.metrics import CallSeries
from ..pipeline.formats import missing_formats

ConfigFieldType = Literal["string", "number", "integer", "boolean", "enum", "array", "object"]


def _fold_keys(value: Any) -> Any:
    """Lower-case every object key: plugins built for the Go host rely on case-insensitive JSON."""
    if isinstance(value, Mapping):
        return {str(k).casefold(): _fold_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fold_keys(v) for v in value]
    return value


class _Folded(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class ConfigField(_Folded):
    name: str = Field(alias="name", min_length=1)
    type: ConfigFieldType = Field(alias="type")
    enum_values: tuple[str, ...] = Field(default=(), alias="enumvalues")
    description: str = Field(default="", alias="description")

    @field_validator("type", mode="before")
    @classmethod
    def _type_lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Metadata(_Folded):
    name: str = Field(alias="name")
    version: str = Field(alias="version")
    author: str = Field(alias="author")
    github_repository: str = Field(alias="githubrepository")
    logo: str = Field(default="", alias="logo")
    config_fields: tuple[ConfigField, ...] = Field(default=(), alias="configfields")

    @field_validator("name", "version", "author", "github_repository")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("config_fields", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    def to_json(self) -> dict[str, Any]:
        """The Go host's spelling, as plugins and API clients expect it."""
        return {
            "Name": self.name,
            "Version": self.version,
            "Author": self.author,
            "GitHubRepository": self.github_repository,
            "Logo": self.logo,
            "ConfigFields": [
                {
                    "Name": f.name,
                    "Type": f.type,
                    "EnumValues": list(f.enum_values),
                    "Description": f.description,
                }
                for f in self.config_fields
            ],
        }


class ServiceEntry(_Folded):
    """One entry of `Services`: a service the plugin offers (host.service.lookup finds it)."""

    name: str = Field(alias="name", min_length=1, max_length=256)
    version: str = Field(default="", alias="version", max_length=128)


class Registration(_Folded):
    """A valid answer to plugin.register / plugin.reconfigure (ABI.md section 3)."""

    schema_version: int = Field(default=1, alias="schema_version")
    metadata: Metadata = Field(alias="metadata")
    capabilities: dict[str, Any] = Field(default_factory=dict, alias="capabilities")
    # This host's own: topic globs delivered as event.handle, and the services offered.
    subscriptions: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(
        default=(), alias="subscriptions", max_length=256
    )
    services: tuple[ServiceEntry, ...] = Field(default=(), alias="services", max_length=256)

    @field_validator("subscriptions", "services", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        if value in (None, 0):
            return 1
        return value

    @property
    def flags(self) -> frozenset[str]:
        """The capability flags that are switched on and bring methods."""
        return frozenset(
            name
            for name, on in self.capabilities.items()
            if on is True and name in CAPABILITY_METHODS
        )

    @property
    def methods(self) -> frozenset[str]:
        return frozenset(m for flag in self.flags for m in CAPABILITY_METHODS[flag])

    @property
    def warnings(self) -> tuple[str, ...]:
        """What loads but cannot work: an executor without formats fails every call."""
        problem = missing_formats(self.capabilities)
        return (problem,) if problem else ()


def parse_registration(result: Any, plugin_id: str) -> Registration:
    """Validate a registration result; an invalid one raises PluginLoadError with the reason."""

    def invalid(reason: str) -> PluginLoadError:
        return InvalidRegistration(
            f"invalid registration: {reason}",
            plugin_id=plugin_id,
            method="plugin.register",
        )

    if not isinstance(result, Mapping):
        raise invalid(f"expected a JSON object, got {type(result).__name__}")
    try:
        reg = Registration.model_validate(_fold_keys(result))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise invalid(f"{where}: {first['msg']}") from None
    if reg.schema_version > SCHEMA_VERSION:
        raise invalid(
            f"schema_version {reg.schema_version} is newer than this host supports "
            f"({SCHEMA_VERSION}); upgrade cliproxy-host or build the plugin for schema "
            f"{SCHEMA_VERSION}"
        )
    if not reg.flags:
        unknown = sorted(set(reg.capabilities) - set(CAPABILITY_METHODS) - QUALIFIER_FLAGS)
        hint = f" (unknown flags: {', '.join(unknown)})" if unknown else ""
        raise invalid(f"no capability flag is set to true{hint}")
    return reg


@dataclass(frozen=True)
class Record:
    """A registered plugin as dispatch sees it."""

    plugin_id: str
    priority: int
    backend: GuardedPlugin = field(compare=False)
    registration: Registration = field(compare=False)
    enabled: bool = True
    # Where its calls are counted (and traced); None with metrics off.
    series: CallSeries | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NativeHandler:
    """A handler the application registered in Python; it runs before every plugin."""

    name: str
    method: str
    handler: Any = field(compare=False)


def dispatch_order(natives: Sequence[NativeHandler], records: Iterable[Record]) -> list[Any]:
    """The one ordering rule (ABI.md section 5).

    Native handlers first, in the order they were registered; then enabled plugins by
    priority, highest first, ties broken by plugin ID ascending. Disabled plugins are left out.
    """
    plugins = sorted((r for r in records if r.enabled), key=lambda r: (-r.priority, r.plugin_id))
    return [*natives, *plugins]


class Snapshot:
    """An immutable view of the registered plugins; swapped whole, never mutated."""

    __slots__ = ("_by_id", "_by_method", "get", "records")

    def __init__(self, records: Iterable[Record] = ()) -> None:
        every = tuple(records)
        self.records: tuple[Record, ...] = tuple(dispatch_order((), every))
        self._by_id = {r.plugin_id: r for r in every}
        # The record of a plugin ID, or None: the dict's own get, on every host.call.
        self.get: Callable[[str], Record | None] = self._by_id.get
        by_method: dict[str, list[Record]] = {}
        for record in self.records:
            for method in record.registration.methods:
                by_method.setdefault(method, []).append(record)
        self._by_method = {m: tuple(rs) for m, rs in by_method.items()}

    def providers(self, method: str) -> tuple[Record, ...]:
        """Enabled plugins whose capabilities bring `method`, in dispatch order."""
        return self._by_method.get(method, ())


_ARTICLE: Final = {"array": "an", "object": "an", "integer": "an"}


def _type_error(field: ConfigField, value: Any) -> str | None:
    kind = field.type
    if kind == "enum":
        if not isinstance(value, str) or (field.enum_values and value not in field.enum_values):
            return f"expected one of {', '.join(field.enum_values)}, got {value!r}"
        return None
    fits = {
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    return None if fits else f"expected {_ARTICLE.get(kind, 'a')} {kind}, got {value!r}"


def check_settings(fields: Iterable[ConfigField], settings: Mapping[str, Any]) -> list[str]:
    """Problems of a plugin's settings against its declared ConfigFields, one per field.

    The host's keys (HOST_KEYS: enabled, priority, isolation, timeout_ms, ...) are the
    config schema's to check, even where a plugin declares a field of the same name. Keys
    the plugin did not declare are its own business and pass; null means unset.
    """
    declared = {f.name: f for f in fields}
    problems = []
    for key, value in settings.items():
        field = declared.get(key)
        if field is None or key in HOST_KEYS or value is None:
            continue
        reason = _type_error(field, value)
        if reason:
            problems.append(f"{key}: {reason}")
    return problems
