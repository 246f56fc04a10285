"""The host's YAML config as pydantic models: sections, defaults, the keys the host owns
in each plugin's entry, and the `config_yaml` bytes each plugin is sent."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML

from ..discovery import is_valid_id, normalize_pin
from ..errors import ConfigError
from ..trust import TrustPolicy
from ..trust.digest import is_sha256
from ..trust.keys import public_key_problem
from .files import read_existing_file
from .problems import broken_rule, describe, line_of, validation_message, where, yaml_name
from .yamledit import dump_for_plugin, is_list, parse_yaml, plain

__all__ = [
    "FILE_ONLY_KEYS",
    "HOST_KEYS",
    "AuditSection",
    "ClientKeyEntry",
    "ConfigError",
    "HostConfig",
    "HttpPolicy",
    "MetricsSection",
    "PluginConfig",
    "PluginPermissions",
    "PluginsSection",
    "RemoteManagement",
    "StoreConfig",
    "store_url_allowed",
]


def _kebab(name: str) -> str:
    return name.replace("_", "-")


# Keys of the host's sections are kebab-case in the file; Python code may use field names.
_KEBAB_KEYS: Final = ConfigDict(alias_generator=_kebab, populate_by_name=True)


class _Section(BaseModel):
    model_config = ConfigDict(**_KEBAB_KEYS, extra="forbid")


class HttpPolicy(_Section):
    """The `http:` section: how host.http.do reaches the network on a plugin's behalf."""

    timeout_seconds: float = Field(default=30.0, gt=0)
    max_response_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Host name patterns (fnmatch wildcards, e.g. "*.example.com"); empty allows every host.
    allowed_hosts: list[str] = Field(default_factory=list)
    proxy_url: str | None = None


class RemoteManagement(_Section):
    """The `remote-management:` section: who may use the management API, with which key,
    and how large a request body it takes."""

    allow_remote: StrictBool = False
    # Plaintext or a bcrypt hash (`$2b$12$...`); the host replaces plaintext by its hash
    # whenever it writes the file. Kept out of repr so it never lands in a log.
    secret_key: str | None = Field(default=None, repr=False)
    # The Go host's control-panel settings: accepted so one file can serve both hosts,
    # ignored here (this host has no control panel).
    disable_control_panel: StrictBool = False
    disable_auto_update_panel: StrictBool = False
    panel_github_repository: str | None = None
    # This host's own: larger management request bodies are refused (413) unread.
    max_body_bytes: StrictInt = Field(default=1024 * 1024, gt=0)
    # How long a signed resource link in the plugin list stays valid: long enough to click,
    # at most a day, so a leaked link does not open a resource for long.
    resource_link_ttl: StrictInt = Field(default=300, ge=10, le=86_400)
    # The Go host serves /v0/resource/plugins/... without a key; true does the same here.
    open_plugin_resources: StrictBool = False
    # A key that opens GET /metrics only (plaintext or a bcrypt hash), for a scraper that
    # must not hold the management key; the management key opens it too.
    metrics_key: str | None = Field(default=None, repr=False)


class AuditSection(_Section):
    """The `audit:` section: the append-only log of management writes (JSON lines)."""

    enabled: StrictBool = True
    # A relative path is taken from the config's folder.
    file: Annotated[str, StringConstraints(min_length=1)] = "audit.jsonl"
    # The file is rotated (audit.jsonl.1, .2, ...) before a line would take it past this.
    max_bytes: StrictInt = Field(default=4 * 1024 * 1024, ge=4096)
    # Rotated files kept beside the current one; the oldest goes first.
    max_files: StrictInt = Field(default=5, ge=1, le=100)


class MetricsSection(_Section):
    """The `metrics:` section: GET /metrics and the per-call series (read once at start)."""

    # false: no per-call counting and no OpenTelemetry spans; /metrics answers 404.
    enabled: StrictBool = True


class ClientKeyEntry(_Section):
    """An `api-keys:` entry written as a mapping: a client key limited to some models or
    plugins (a plain string entry is a key limited to nothing)."""

    key: str = Field(min_length=1, repr=False)
    # None: every model (or plugin); a list: only these.
    models: list[str] | None = None
    plugins: list[str] | None = None


def _key_entry(value: Any) -> Any:
    # The Go host's form, a plain string, is the mapping with only its key.
    if isinstance(value, str):
        return {"key": value}
    if not isinstance(value, Mapping):
        raise broken_rule(
            f"expected a key (a string) or a mapping with key, models and plugins, "
            f"got {describe(value)}"
        )
    return value


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


def _check_sha256(value: str) -> str:
    if not is_sha256(value):
        raise broken_rule(
            f"expected the file's sha256 as 64 hex digits (`cliproxy-host check FILE` "
            f"prints it), got {describe(value)}"
        )
    return value.lower()


def _check_public_key(value: str) -> str:
    problem = public_key_problem(value)
    if problem is not None:
        raise broken_rule(f"{problem}, got {describe(value)}")
    return value.strip()


Sha256Pin = Annotated[str, AfterValidator(_check_sha256)]
TrustedKey = Annotated[str, AfterValidator(_check_public_key)]

# -- bounds: every size a config file or a management request controls (README "Limits") --
# The config file; the management API's writes may not grow it past this either.
MAX_CONFIG_FILE_BYTES: Final = 4 * 1024 * 1024
# A plugin's entry (`plugins.configs.<id>`): its keys and values, each counted as the UTF-8
# text of the scalar plus one; about the size of the config_yaml it is sent.
MAX_PLUGIN_SETTINGS_BYTES: Final = 256 * 1024
# One string (a key or a value), in characters.
MAX_STRING_CHARS: Final = 64 * 1024
# Levels of mappings and lists, the top-level mapping being the first. A management body
# (at most 32 levels) becomes `plugins.configs.<id>` at level 4, so 35 levels fit.
MAX_NESTING_DEPTH: Final = 40
# Entries under `plugins.configs`.
MAX_PLUGIN_ENTRIES: Final = 1024

# The Go host decodes `priority` into a Go `int`, 64 bits on every platform it ships for
# (amd64, arm64): a value outside int64 fails to decode there, and is refused here alike.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
Priority = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]


class StoreConfig(_KeepsKeyOrder):
    """`plugins.configs.<id>.store`: where the plugin's file comes from, and its pinned version."""

    # Other keys belong to whatever installs plugin files; the host only reads the pin.
    model_config = ConfigDict(**_KEBAB_KEYS, extra="allow")

    version: str | None = None
    release_tag: str | None = None


class PluginPermissions(_KeepsKeyOrder):
    """`plugins.configs.<id>.permissions`: what the plugin may reach (callbacks/permissions.py).

    A key left out keeps the default; a key set is the whole grant for what it covers.
    """

    model_config = ConfigDict(**_KEBAB_KEYS, extra="forbid")

    # Globs of host callback names ("host.http.*"); set, it replaces the default set.
    callbacks: list[str] | None = None
    # Host name patterns, as http.allowed-hosts; narrows that list for this plugin.
    allowed_hosts: list[str] | None = None
    # Topic globs the plugin may publish to / subscribe to; each grants its callbacks.
    publish: list[str] | None = None
    subscribe: list[str] | None = None
    # Plugin IDs host.plugin.call and host.dispatch may reach; grants both callbacks.
    call: list[str] | None = None


NonEmptyStr = Annotated[StrictStr, StringConstraints(min_length=1)]


class PluginConfig(_KeepsKeyOrder):
    """`plugins.configs.<id>`: the host's keys; every other key is the plugin's own."""

    model_config = ConfigDict(extra="allow")

    enabled: StrictBool = False
    priority: Priority = 0
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
    # The sha256 the plugin's file must have; the host hashes the very bytes it loads.
    sha256: Sha256Pin | None = None
    permissions: PluginPermissions | None = None
    # A plugin that is a program (docs/PROTOCOL.md): the host starts it and supervises it
    # like an isolated worker. From the config file only (FILE_ONLY_KEYS).
    command: Annotated[list[NonEmptyStr], Field(min_length=1)] | None = None
    cwd: NonEmptyStr | None = None  # relative to the config file's directory
    env: dict[NonEmptyStr, StrictStr] | None = None
    # A program started elsewhere that connects to plugins.socket with this token (or the
    # first line of token_file, relative to the config file's folder). One ID per token.
    token: NonEmptyStr | None = None
    token_file: NonEmptyStr | None = None

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
        for key in _ALWAYS_SENT:
            mapping.setdefault(key, getattr(self, key))
        return dump_for_plugin(mapping)


# Every key of `plugins.configs.<id>` the host owns, as spelled in the file: PluginConfig's
# fields, so a field added there is host-owned everywhere (the ConfigFields check of a
# plugin's settings, the management API). Every other key of an entry is the plugin's own.
HOST_KEYS: Final = frozenset(
    yaml_name(name, info) for name, info in PluginConfig.model_fields.items()
)

# Host keys that only the config file sets: they say what the host runs, so the management
# API neither shows nor takes them.
FILE_ONLY_KEYS: Final = frozenset({"command", "cwd", "env", "token", "token_file"})

# The host keys a plugin's config_yaml always holds (ABI.md section 3), set or not.
_ALWAYS_SENT: Final = ("enabled", "priority")


def _check_plugin_id(plugin_id: str) -> str:
    if not is_valid_id(plugin_id):
        raise broken_rule(
            f"invalid plugin ID {describe(plugin_id)}: expected letters, digits, '.', '_' or"
            " '-', starting with a letter or digit, at most 128 characters"
        )
    return plugin_id


PluginId = Annotated[str, AfterValidator(_check_plugin_id)]


def store_url_allowed(url: str) -> bool:
    """Whether the store may fetch `url`: https, or http to a literal loopback address
    (a registry on the operator's own machine); never with a user or password in it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        has_user = parts.username is not None
    except ValueError:
        return False
    if not host or has_user:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_store_url(url: str) -> str:
    # A blank entry is skipped, as the Go host does.
    if url.strip() and not store_url_allowed(url.strip()):
        raise broken_rule(
            f"expected an https:// URL (http:// only for a loopback host such as 127.0.0.1),"
            f" got {describe(url)}"
        )
    return url


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
    # How deep host.model.* calls may nest (a plugin's executor calling a model whose
    # executor calls a model ...); the Go host has no limit.
    model_call_depth: StrictInt = Field(default=8, ge=1, le=64)
    # How deep host.plugin.call / host.dispatch may nest (A calls B calls C ...).
    plugin_call_depth: StrictInt = Field(default=8, ge=1, le=64)
    # "standard": the Go host's callbacks are allowed unless a plugin's permissions narrow
    # them; "strict": a plugin may use only what its permissions grant.
    default_permissions: Literal["standard", "strict"] = "standard"
    # A Unix socket (made 0600) where plugin programs started elsewhere connect, each with
    # its plugin's token (docs/PROTOCOL.md); relative to the config file's folder.
    socket: Annotated[str, StringConstraints(min_length=1)] | None = None
    configs: dict[PluginId, PluginConfig] = Field(default_factory=dict)
    # The plugin store (the Go host's `store-sources`): registry URLs listed after the
    # official one, https unless on loopback.
    store_sources: list[Annotated[str, AfterValidator(_check_store_url)]] = Field(
        default_factory=list
    )
    # This host's own store keys: list the official source (false keeps a host off the
    # internet); where github-release sources ask for releases; the cap on one download
    # and on one upload (PUT .../file); how long one store request may take.
    store_official: StrictBool = True
    store_github_api: Annotated[str, AfterValidator(_check_store_url)] = "https://api.github.com"
    store_max_bytes: PositiveStrictInt = 256 * 1024 * 1024
    max_upload_bytes: PositiveStrictInt = 256 * 1024 * 1024
    store_timeout_seconds: float = Field(default=20.0, gt=0, le=600)
    # ed25519 public keys (base64 of the raw 32 bytes) whose `<file>.sig` a plugin file may
    # carry; require-signature refuses a file that no trusted key signed.
    trusted_keys: list[TrustedKey] = Field(default_factory=list)
    require_signature: StrictBool = False

    @model_validator(mode="after")
    def _signatures_need_keys(self) -> Self:
        if self.require_signature and not self.trusted_keys:
            raise broken_rule(
                "require-signature is true but trusted-keys is empty, so no plugin could "
                "load: add the signers' public keys to plugins.trusted-keys"
            )
        return self

    @field_validator("configs", mode="before")
    @classmethod
    def _empty_configs(cls, value: Any) -> Any:
        value = _null_is_empty(value)
        if isinstance(value, dict):
            return {key: _null_is_empty(entry) for key, entry in value.items()}
        return value


class HostConfig(BaseModel):
    """The whole config file. Top-level keys other than `plugins`, `http`,
    `remote-management`, `auth-dir`, `api-keys`, `audit` and `metrics` belong to other
    programs sharing the file: they are kept and ignored."""

    # populate_by_name: `HostConfig(remote_management=...)` must not land in model_extra.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    plugins: PluginsSection = Field(default_factory=PluginsSection)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    remote_management: RemoteManagement = Field(
        default_factory=RemoteManagement,
        validation_alias="remote-management",
        serialization_alias="remote-management",
    )
    # The credential files of host.auth.* (the Go host's key; its default there is
    # ~/.cli-proxy-api, here a folder beside the config file). See auth_dir_path.
    auth_dir: Annotated[str, StringConstraints(min_length=1)] = Field(
        default="auths", validation_alias="auth-dir", serialization_alias="auth-dir"
    )
    # The keys clients present to /v1 (the Go host's `api-keys`, a list of strings); an
    # entry may also be a mapping limiting its key. Kept out of repr so no key is logged.
    api_keys: list[Annotated[ClientKeyEntry, BeforeValidator(_key_entry)]] = Field(
        default_factory=list,
        validation_alias="api-keys",
        serialization_alias="api-keys",
        repr=False,
    )
    audit: AuditSection = Field(default_factory=AuditSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)

    @field_validator(
        "plugins", "http", "remote_management", "api_keys", "audit", "metrics", mode="before"
    )
    @classmethod
    def _empty_sections(cls, value: Any) -> Any:
        return _null_is_empty(value)

    # The file the config came from; None in memory.
    _path: Path | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HostConfig:
        """Read and validate a YAML config file; an empty file gives the defaults."""
        source = os.fspath(path)
        file = read_existing_file(Path(path), source, limit=MAX_CONFIG_FILE_BYTES)
        document = parse_yaml(YAML(typ="rt"), file.text, source, max_depth=MAX_NESTING_DEPTH)
        config = cls.from_mapping(document, source)
        config._path = Path(path).absolute()
        return config

    @classmethod
    def from_mapping(cls, data: Mapping[Any, Any] | None, source: str = "<memory>") -> HostConfig:
        """Validate config data already parsed; a ruamel document gives errors line numbers."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{where(source, line_of(data, ()))}: expected a mapping at the top level,"
                f" got {describe(data)}"
            )
        problem = _bounds_problem(data)
        if problem is not None:
            raise ConfigError(f"{source}: {problem}")
        # Only string keys can be ours; anything else belongs to another program.
        ours = {key: value for key, value in plain(data).items() if isinstance(key, str)}
        try:
            return cls.model_validate(ours, strict=True)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, data, exc, cls)) from None

    @property
    def source_path(self) -> Path | None:
        """The file the config was read from (absolute); None for one made in memory."""
        return self._path

    def plugins_dir(self) -> Path:
        """The plugins directory; a relative `plugins.dir` is taken from the config's folder."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return base / self.plugins.dir

    def auth_dir_path(self) -> Path:
        """The auth dir: `~` is the home folder (as in the Go host); a relative `auth-dir`
        is taken from the config's folder (the working directory for a config in memory)."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return base / Path(self.auth_dir).expanduser()

    def audit_path(self) -> Path:
        """The audit log's file; a relative `audit.file` is taken from the config's folder."""
        base = self._path.parent if self._path is not None else Path.cwd()
        return base / Path(self.audit.file).expanduser()

    def plugin_entry(self, plugin_id: str) -> PluginConfig:
        """A plugin's config entry, or the defaults when the config has none."""
        entry = self.plugins.configs.get(plugin_id)
        return entry if entry is not None else PluginConfig()

    def trust_policy(self, plugin_id: str) -> TrustPolicy:
        """What the plugin's file must satisfy: its pin, the trusted keys, require-signature."""
        return TrustPolicy(
            sha256=self.plugin_entry(plugin_id).sha256,
            trusted_keys=tuple(self.plugins.trusted_keys),
            require_signature=self.plugins.require_signature,
        )

    def config_yaml(self, plugin_id: str) -> bytes:
        """The `config_yaml` bytes sent to a plugin: `enabled: false\npriority: 0\n`
        for one the config does not mention (ABI.md section 3)."""
        return self.plugin_entry(plugin_id).config_yaml()


# Up to 3900 decimal digits or so (str() takes 4300); about 3.32 bits a digit.
_INT_BITS_WITHIN_STR: Final = 13_000


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path) or "the top level"


def _bounds_problem(data: Any) -> str | None:
    """The first bound (MAX_* above) that `data` breaks, naming its key; None when it keeps
    them all. Walks no deeper than the depth bound, so it never overflows the stack."""
    sizes: dict[Any, int] = {}  # plugin ID -> the size of its entry so far

    def walk(value: Any, path: tuple[Any, ...], depth: int) -> str | None:
        entry = path[2] if len(path) >= 3 and path[:2] == ("plugins", "configs") else None
        if isinstance(value, Mapping) or is_list(value):
            if depth + 1 > MAX_NESTING_DEPTH:
                return (
                    f"{_dotted(path)}: nested deeper than {MAX_NESTING_DEPTH} levels"
                    " (MAX_NESTING_DEPTH): flatten it"
                )
            if path == ("plugins", "configs") and len(value) > MAX_PLUGIN_ENTRIES:
                return (
                    f"plugins.configs: {len(value)} entries, more than the"
                    f" {MAX_PLUGIN_ENTRIES} allowed (MAX_PLUGIN_ENTRIES): remove unused ones"
                )
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                if isinstance(value, Mapping):
                    problem = scalar(key, (*path, key), entry)
                    if problem is not None:
                        return problem
                problem = walk(item, (*path, key), depth + 1)
                if problem is not None:
                    return problem
            return None
        return scalar(value, path, entry)

    def scalar(value: Any, path: tuple[Any, ...], entry: Any) -> str | None:
        if isinstance(value, int) and value.bit_length() > _INT_BITS_WITHIN_STR:
            # str() refuses ints of more than 4300 digits; such an int is too long anyway.
            return f"{_dotted(path)}: an integer of more than 3900 digits, too long for a setting"
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_STRING_CHARS:
            return (
                f"{_dotted(path)}: a string of {len(text)} characters, more than the"
                f" {MAX_STRING_CHARS} allowed (MAX_STRING_CHARS): keep long data in a file"
            )
        if entry is None:
            return None
        size = sizes.get(entry, 0) + len(text.encode("utf-8", "surrogatepass")) + 1
        sizes[entry] = size
        if size > MAX_PLUGIN_SETTINGS_BYTES:
            return (
                f"plugins.configs.{entry}: its settings are larger than"
                f" {MAX_PLUGIN_SETTINGS_BYTES} bytes (MAX_PLUGIN_SETTINGS_BYTES):"
                " keep large data in a file the plugin reads"
            )
        return None

    return walk(data, (), 0)
