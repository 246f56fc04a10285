"""A store registry (`registry.json`) as pydantic models, validated as the Go host does."""

from __future__ import annotations

import re
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..discovery import is_valid_id, normalize_pin

SCHEMA_V1: Final = 1
SCHEMA_V2: Final = 2  # the first with `direct` installs
GITHUB_RELEASE: Final = "github-release"
DIRECT: Final = "direct"
InstallType = Literal["github-release", "direct"]

# The Go host's version rule: a digit first, no leading "v" (a tag's "v" is stripped first).
_VERSION_RE: Final = re.compile(r"[0-9][0-9A-Za-z.+-]*")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_GOOS_ALIASES: Final = {"mac": "darwin", "macos": "darwin", "osx": "darwin"}
_GOARCH_ALIASES: Final = {"x64": "amd64", "x86_64": "amd64", "aarch64": "arm64"}


class RegistryProblem(ValueError):
    """Why a registry or one of its entries cannot be used (the message names the field)."""


def valid_version(version: str) -> bool:
    return _VERSION_RE.fullmatch(version) is not None


def bare_version(version: str) -> str:
    """A version as files name it: surrounding space and one leading v/V dropped."""
    return normalize_pin(version.strip())


class _Model(BaseModel):
    # Unknown keys are a newer registry's: ignored, as the Go host's decoder does.
    model_config = ConfigDict(extra="ignore", frozen=True)


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class Artifact(_Model):
    """One platform's download of a `direct` install."""

    goos: str = ""
    goarch: str = ""
    url: str = ""
    sha256: str = ""
    size: int = 0

    @field_validator("goos", mode="before")
    @classmethod
    def _goos(cls, value: Any) -> Any:
        value = _stripped(value)
        return _GOOS_ALIASES.get(value.lower(), value.lower()) if isinstance(value, str) else value

    @field_validator("goarch", mode="before")
    @classmethod
    def _goarch(cls, value: Any) -> Any:
        value = _stripped(value)
        if isinstance(value, str):
            return _GOARCH_ALIASES.get(value.lower(), value.lower())
        return value

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        return _stripped(value)

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha(cls, value: Any) -> Any:
        value = _stripped(value)
        return value.lower() if isinstance(value, str) else value

    def problem(self) -> str | None:
        for name in ("goos", "goarch", "url", "sha256"):
            if not getattr(self, name):
                return f"missing {name}"
        try:
            parts = urlsplit(self.url)
            user = parts.username
        except ValueError:
            return "invalid artifact url"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "artifact url must be an absolute http or https URL"
        if user is not None or parts.query or parts.fragment:
            return "artifact url must carry no user, query or fragment"
        if _SHA256_RE.fullmatch(self.sha256) is None:
            return "sha256 must be 64 hex digits"
        if self.size < 0:
            return "size must not be negative"
        return None


class InstallPlan(_Model):
    type: str = ""
    artifacts: list[Artifact] = Field(default_factory=list)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        value = _stripped(value)
        return value.lower() if isinstance(value, str) else value

    def problem(self) -> str | None:
        if self.type not in (GITHUB_RELEASE, DIRECT):
            return f"unsupported install type {self.type!r}"
        if self.type != DIRECT:
            return None
        if not self.artifacts:
            return "direct install requires at least one artifact"
        for index, artifact in enumerate(self.artifacts):
            problem = artifact.problem()
            if problem is not None:
                return f"artifacts[{index}]: {problem}"
        return None

    def artifact_for(self, goos: str, goarch: str) -> Artifact | None:
        return next((a for a in self.artifacts if (a.goos, a.goarch) == (goos, goarch)), None)


class Version(_Model):
    version: str = ""
    install: InstallPlan = Field(default_factory=InstallPlan)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        return bare_version(value) if isinstance(value, str) else value


class StorePlugin(_Model):
    """One entry of a registry (the Go host's field names)."""

    id: str = ""
    name: str = ""
    description: str = ""
    author: str = ""
    version: str = ""
    versions: list[Version] = Field(default_factory=list)
    repository: str = ""
    logo: str = ""
    homepage: str = ""
    license: str = ""
    tags: list[str] = Field(default_factory=list)
    install: InstallPlan = Field(default_factory=InstallPlan)
    auth_required: bool = False

    @field_validator(
        "id", "name", "description", "author", "version", "repository", "logo", "homepage",
        "license", mode="before",
    )  # fmt: skip
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return _stripped(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        return [_stripped(t) for t in value] if isinstance(value, list) else value

    @property
    def install_type(self) -> str:
        return self.install.type or GITHUB_RELEASE

    def problem(self) -> str | None:
        """The Go host's validation of one entry: the first problem, or None."""
        required = ["id", "name", "description", "author"]
        if self.install_type == GITHUB_RELEASE:
            required.append("repository")
        for name in required:
            if not getattr(self, name):
                return f"missing required field {name}"
        if not is_valid_id(self.id):
            return f"invalid plugin id {self.id!r}"
        if self.version and not valid_version(self.version):
            return f"invalid plugin version {self.version!r}"
        if self.install_type == GITHUB_RELEASE:
            return github_repository_problem(self.repository)
        if self.install_type != DIRECT:
            return f"unsupported install type {self.install.type!r}"
        if not self.version:
            return "missing required field version"
        plan = self.install.model_copy(update={"type": DIRECT})
        return plan.problem() or self._versions_problem()

    def _versions_problem(self) -> str | None:
        seen: set[str] = set()
        for index, entry in enumerate(self.versions):
            if not valid_version(entry.version):
                return f"versions[{index}]: invalid plugin version {entry.version!r}"
            if entry.version in seen:
                return f"versions[{index}]: duplicate plugin version {entry.version!r}"
            seen.add(entry.version)
            kind = entry.install.type or self.install_type
            if kind != self.install_type:
                return f"versions[{index}]: install type {kind!r} is not the plugin's"
            problem = entry.install.model_copy(update={"type": kind}).problem()
            if problem is not None:
                return f"versions[{index}]: {problem}"
        return None

    def versions_offered(self) -> list[str]:
        """Every version a direct entry offers, the top-level one first."""
        return [self.version, *(v.version for v in self.versions if v.version != self.version)]

    def plan_for(self, version: str) -> InstallPlan | None:
        """The direct install plan of one version; None if the entry does not offer it."""
        if bare_version(self.version) == version:
            return self.install.model_copy(update={"type": DIRECT})
        for entry in self.versions:
            if entry.version == version:
                return entry.install.model_copy(update={"type": entry.install.type or DIRECT})
        return None

    def platforms(self) -> list[tuple[str, str]]:
        if self.install_type != DIRECT:
            return []
        seen: dict[tuple[str, str], None] = {}
        for plan in (self.install, *(v.install for v in self.versions)):
            for artifact in plan.artifacts:
                if artifact.goos and artifact.goarch:
                    seen.setdefault((artifact.goos, artifact.goarch), None)
        return list(seen)


class Registry(_Model):
    schema_version: int
    plugins: list[StorePlugin] = Field(default_factory=list)

    def plugin(self, plugin_id: str) -> StorePlugin | None:
        return next((p for p in self.plugins if p.id == plugin_id), None)


def github_repository_problem(repository: str) -> str | None:
    """None for `https://github.com/{owner}/{repo}` (no .git, query or fragment)."""
    shape = "repository must be https://github.com/{owner}/{repo}"
    try:
        parts = urlsplit(repository)
    except ValueError:
        return shape
    segments = parts.path.strip("/").split("/")
    if (
        parts.scheme != "https"
        or parts.netloc != "github.com"
        or parts.query
        or parts.fragment
        or len(segments) != 2
        or not all(segments)
        or segments[1].endswith(".git")
    ):
        return shape
    return None


def github_repository(repository: str) -> tuple[str, str]:
    owner, repo = urlsplit(repository).path.strip("/").split("/")
    return owner, repo


def parse_registry(data: bytes) -> Registry:
    """The registry in `data`, validated; RegistryProblem says what is wrong and where."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RegistryProblem(f"decode registry: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryProblem("decode registry: expected a JSON object")
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RegistryProblem(f"decode registry: {where}: {first['msg']}") from None
    if registry.schema_version not in (SCHEMA_V1, SCHEMA_V2):
        raise RegistryProblem(f"unsupported schema_version {registry.schema_version}")
    seen: set[str] = set()
    for index, plugin in enumerate(registry.plugins):
        if registry.schema_version == SCHEMA_V1 and plugin.install_type == DIRECT:
            raise RegistryProblem(
                f"plugins[{index}]: direct install requires schema_version {SCHEMA_V2}"
            )
        problem = plugin.problem()
        if problem is not None:
            raise RegistryProblem(f"plugins[{index}]: {problem}")
        if plugin.id in seen:
            raise RegistryProblem(f"plugins[{index}]: duplicate plugin id {plugin.id!r}")
        seen.add(plugin.id)
    return registry
