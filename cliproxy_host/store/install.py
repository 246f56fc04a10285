"""A store install or an upload, end to end: resolve the entry, download, verify, unpack,
check, place atomically, write the config entry and reload, as one change."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from ..config import ConfigStore, HostConfig
from ..config.files import write_atomically
from ..discovery import is_valid_id, platform_tag, plugins_dir_problem
from ..errors import (
    InvalidPluginId,
    InvalidRequest,
    PluginDirectoryInvalid,
    PluginInstallFailed,
    PluginManifestInvalid,
    PluginNotFound,
    StoreRegistryFailed,
    StoreSourceConflict,
    StoreSourceNotFound,
    StoreSourceRequired,
    UploadInvalid,
)
from ..trust.signatures import signature_path
from .fetch import Fetched, Fetcher, FetchFailed
from .place import Placement, Undo, library_problem, staging_file, target_path
from .registry import (
    DIRECT,
    GITHUB_RELEASE,
    Artifact,
    InstallPlan,
    RegistryProblem,
    StorePlugin,
    bare_version,
    github_repository,
    parse_registry,
    valid_version,
)
from .sources import Source, sources_of
from .trust import Isolation, installed_isolation, verify_installed
from .unpack import UnpackFailed, extract_library, is_zip

log = logging.getLogger(__name__)

UPLOAD_SOURCE = "upload"  # the source-id an uploaded plugin's store entry records


class Committer(Protocol):
    """Makes an install one change: places the file, writes the entry, reloads (HostService
    with a running host; FileCommitter for the command line, whose server reloads itself)."""

    @property
    def config(self) -> HostConfig: ...

    def install_file(
        self, plugin_id: str, place: Callable[[], Undo], entry: Mapping[str, Any]
    ) -> HostConfig: ...


class FileCommitter:
    """A Committer over the config file alone: a running server's watcher applies it."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    @property
    def config(self) -> HostConfig:
        return self.store.config

    def install_file(
        self, plugin_id: str, place: Callable[[], Undo], entry: Mapping[str, Any]
    ) -> HostConfig:
        undo = place()
        try:
            return self.store.patch_plugin_config(plugin_id, entry)
        except BaseException:
            undo()
            raise


@dataclass(frozen=True)
class InstallRequest:
    plugin_id: str
    version: str | None = None
    source: str | None = None
    isolation: Isolation | None = None
    # The content of the file's detached signature (`<file>.sig`), if one came with it.
    signature: bytes | None = None


@dataclass(frozen=True)
class Installed:
    """What an install did (the reply's fields)."""

    plugin_id: str
    version: str
    install_type: str
    path: Path
    source: Source | None
    isolation: Isolation
    plugins_enabled: bool

    def reply(self) -> dict[str, Any]:
        source = self.source
        return {
            "status": "installed",
            "source_id": source.id if source else "",
            "source_name": source.name if source else "",
            "source_url": source.url if source else "",
            "id": self.plugin_id,
            "version": self.version,
            "install_type": self.install_type,
            "path": str(self.path),
            "plugins_enabled": self.plugins_enabled,
            # This host swaps a loaded plugin's file without a restart.
            "restart_required": False,
            "isolation": self.isolation,
        }


@dataclass(frozen=True)
class Sourced:
    source: Source
    plugin: StorePlugin


def fetcher_for(config: HostConfig) -> Fetcher:
    return Fetcher(timeout=config.plugins.store_timeout_seconds, proxy=config.http.proxy_url)


def read_source(fetcher: Fetcher, source: Source) -> list[StorePlugin]:
    """The plugins a source lists; StoreRegistryFailed says why it cannot be read."""
    try:
        data = fetcher.read(source.url, accept="application/json")
        return parse_registry(data).plugins
    except (FetchFailed, RegistryProblem) as exc:
        raise StoreRegistryFailed(f"store source {source.id} ({source.url}): {exc}") from None


def read_sources(fetcher: Fetcher, sources: list[Source]) -> list[list[StorePlugin] | str]:
    """Each source's plugins, or why it cannot be read; read in parallel, so sources that
    cannot be reached cost the timeout once, not once each."""

    def one(source: Source) -> list[StorePlugin] | str:
        try:
            return read_source(fetcher, source)
        except StoreRegistryFailed as exc:
            return exc.message

    if not sources:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(sources)), thread_name_prefix="store") as pool:
        return list(pool.map(one, sources))


def requested_version(query: str | None, body: str | None) -> str | None:
    """The version asked for by `?version=` and the body's `version`; they must agree."""
    query = (query or "").strip() or None
    body = (body or "").strip() or None
    if query and body and bare_version(query) != bare_version(body):
        raise InvalidRequest(
            f"version query {query!r} does not match the body's version {body!r}: send one"
        )
    return query or body


class StoreInstaller:
    """Installs from the store or from an upload through `committer`."""

    def __init__(
        self, committer: Committer, *, goos: str | None = None, goarch: str | None = None
    ) -> None:
        self.committer = committer
        here = platform_tag()
        self.goos = goos or here[0]
        self.goarch = goarch or here[1]

    # -- the store -------------------------------------------------------------------

    def install(self, request: InstallRequest) -> Installed:
        config = self.committer.config
        self._check_id(request.plugin_id)
        plugins_dir = self._plugins_dir(config)
        fetcher = fetcher_for(config)
        found = self._find(config, fetcher, request.plugin_id, request.source)
        self._check_source(config, request.plugin_id, found.source)
        version = request.version
        if version is not None and not valid_version(bare_version(version)):
            raise InvalidRequest(f"version {version!r}: expected a version such as 1.2.0")
        if found.plugin.install_type == DIRECT:
            archive, version, plan, tag = self._direct(fetcher, found.plugin, version, plugins_dir)
        else:
            archive, version, plan, tag = self._release(
                config, fetcher, found.plugin, version, plugins_dir
            )
        manifest = _manifest(found, version, plan, tag)
        return self._finish(
            request,
            archive,
            version=version,
            plugins_dir=plugins_dir,
            manifest=manifest,
            source=found.source,
            install_type=found.plugin.install_type,
            config=config,
        )

    def _find(
        self, config: HostConfig, fetcher: Fetcher, plugin_id: str, wanted: str | None
    ) -> Sourced:
        sources = sources_of(config)
        if wanted:
            source = next((s for s in sources if s.id == wanted), None)
            if source is None:
                known = ", ".join(s.id for s in sources) or "none"
                raise StoreSourceNotFound(
                    f"no store source {wanted!r} (configured: {known}); see GET"
                    " /v0/management/plugin-store for the sources"
                )
            plugin = next((p for p in read_source(fetcher, source) if p.id == plugin_id), None)
            if plugin is None:
                raise PluginNotFound(f"store source {source.id} lists no plugin {plugin_id}")
            return Sourced(source, plugin)
        matches: list[Sourced] = []
        failures: list[str] = []
        for source, read in zip(sources, read_sources(fetcher, sources), strict=True):
            if isinstance(read, str):
                failures.append(read)
                continue
            matches += [Sourced(source, p) for p in read if p.id == plugin_id]
        if not matches:
            if failures and len(failures) == len(sources):
                raise StoreRegistryFailed("; ".join(failures))
            raise PluginNotFound(f"no store source lists a plugin {plugin_id}")
        if len(matches) > 1:
            raise StoreSourceRequired(
                f"{len(matches)} store sources list {plugin_id}: choose one with ?source=<id>",
                sources=[m.source.as_dict() for m in matches],
            )
        return matches[0]

    def _check_source(self, config: HostConfig, plugin_id: str, source: Source) -> None:
        """A plugin installed from one source is updated from that source only."""
        entry = config.plugins.configs.get(plugin_id)
        if entry is None or entry.store is None:
            return
        extra = entry.store.model_extra or {}
        installed_id = str(extra.get("source-id") or "").strip()
        installed_url = str(extra.get("source-url") or "").strip()
        sources = sources_of(config)
        resolved: str | None = None
        if installed_id:
            match = next((s for s in sources if s.id == installed_id), None)
            if match is None or not installed_url or match.url == installed_url:
                resolved = installed_id
        elif installed_url:
            resolved = next((s.id for s in sources if s.url == installed_url), None)
        if resolved == source.id:
            return
        if resolved is None:
            why = "which store source installed it cannot be told"
        else:
            why = f"it was installed from {resolved}"
        raise StoreSourceConflict(
            f"plugin {plugin_id}: {why}, not {source.id}; delete it (DELETE"
            f" /v0/management/plugins/{plugin_id}) before installing it from {source.id}",
            plugin_id=plugin_id,
        )

    def _direct(
        self, fetcher: Fetcher, plugin: StorePlugin, version: str | None, plugins_dir: Path
    ) -> tuple[Fetched, str, InstallPlan, str | None]:
        version = bare_version(version) if version else bare_version(plugin.version)
        plan = plugin.plan_for(version)
        if plan is None:
            offered = ", ".join(plugin.versions_offered())
            raise PluginManifestInvalid(
                f"{plugin.id}: the store offers no version {version} (offered: {offered})",
                plugin_id=plugin.id,
            )
        problem = plan.problem()
        if problem is not None:
            raise PluginManifestInvalid(f"{plugin.id} {version}: {problem}", plugin_id=plugin.id)
        artifact = plan.artifact_for(self.goos, self.goarch)
        if artifact is None:
            raise PluginManifestInvalid(
                f"{plugin.id} {version} has no artifact for {self.goos}/{self.goarch}",
                plugin_id=plugin.id,
            )
        fetched = self._download(fetcher, plugin.id, artifact.url, artifact.size, plugins_dir)
        try:
            if artifact.size > 0 and fetched.size > artifact.size:
                raise PluginInstallFailed(
                    f"{plugin.id}: {artifact.url} is {fetched.size} bytes, more than the"
                    f" {artifact.size} its registry entry declares",
                    plugin_id=plugin.id,
                )
            _verify(plugin.id, artifact.url, fetched, artifact.sha256)
        except BaseException:
            fetched.path.unlink(missing_ok=True)
            raise
        return fetched, version, plan, None

    def _release(
        self,
        config: HostConfig,
        fetcher: Fetcher,
        plugin: StorePlugin,
        version: str | None,
        plugins_dir: Path,
    ) -> tuple[Fetched, str, InstallPlan, str | None]:
        owner, repo = github_repository(plugin.repository)
        api = config.plugins.store_github_api.rstrip("/")
        base = f"{api}/repos/{owner}/{repo}/releases"
        release = self._find_release(fetcher, plugin.id, base, version)
        tag = str(release.get("tag_name") or "").strip()
        resolved = bare_version(tag)
        if not valid_version(resolved) or (
            version is not None and resolved != bare_version(version)
        ):
            raise PluginManifestInvalid(
                f"{plugin.id}: release tag {tag!r} is not version {version or 'a version'}",
                plugin_id=plugin.id,
            )
        name = f"{plugin.id}_{resolved}_{self.goos}_{self.goarch}.zip"
        assets = {
            str(a.get("name", "")).strip(): str(a.get("browser_download_url") or "").strip()
            for a in release.get("assets") or []
            if isinstance(a, dict)
        }
        for needed in (name, "checksums.txt"):
            if not assets.get(needed):
                raise PluginManifestInvalid(
                    f"{plugin.id} {resolved}: the release has no asset {needed}",
                    plugin_id=plugin.id,
                )
        try:
            checksums = parse_checksums(fetcher.read(assets["checksums.txt"]))
        except FetchFailed as exc:
            raise PluginInstallFailed(
                f"{plugin.id}: checksums.txt: {exc}", plugin_id=plugin.id
            ) from None
        expected = checksums.get(name)
        if expected is None:
            raise PluginInstallFailed(
                f"{plugin.id}: checksums.txt has no line for {name}", plugin_id=plugin.id
            )
        fetched = self._download(fetcher, plugin.id, assets[name], 0, plugins_dir)
        try:
            _verify(plugin.id, assets[name], fetched, expected)
        except BaseException:
            fetched.path.unlink(missing_ok=True)
            raise
        return fetched, resolved, InstallPlan(type=GITHUB_RELEASE), tag

    def _find_release(
        self, fetcher: Fetcher, plugin_id: str, base: str, version: str | None
    ) -> dict[str, Any]:
        """The latest release, or the one tagged `version` (tried with and without a v)."""
        if version is None:
            return self._release_json(fetcher, plugin_id, f"{base}/latest")
        tags = [version, version[1:]] if version[:1] in ("v", "V") else [version, f"v{version}"]
        failures = []
        for tag in tags:
            try:
                return self._release_json(fetcher, plugin_id, f"{base}/tags/{tag}")
            except PluginInstallFailed as exc:
                failures.append(exc.message)
        raise PluginInstallFailed("; ".join(failures), plugin_id=plugin_id)

    def _release_json(self, fetcher: Fetcher, plugin_id: str, url: str) -> dict[str, Any]:
        try:
            value = orjson.loads(fetcher.read(url, accept="application/vnd.github+json"))
        except FetchFailed as exc:
            raise PluginInstallFailed(f"{plugin_id}: release: {exc}", plugin_id=plugin_id) from None
        except orjson.JSONDecodeError as exc:
            raise PluginInstallFailed(
                f"{plugin_id}: release {url}: {exc}", plugin_id=plugin_id
            ) from None
        if not isinstance(value, dict):
            raise PluginInstallFailed(
                f"{plugin_id}: release {url}: not an object", plugin_id=plugin_id
            )
        return value

    def _download(
        self, fetcher: Fetcher, plugin_id: str, url: str, size: int, plugins_dir: Path
    ) -> Fetched:
        cap = self.committer.config.plugins.store_max_bytes
        declared = ""
        if 0 < size < cap:
            # The registry's `size` caps the download.
            cap = size
            declared = f" (its registry entry declares {size} bytes)"
        try:
            return fetcher.download(url, self._arch_dir(plugins_dir), cap=cap)
        except FetchFailed as exc:
            raise PluginInstallFailed(
                f"{plugin_id}: download: {exc}{declared}", plugin_id=plugin_id
            ) from None

    # -- uploads -----------------------------------------------------------------------

    def upload_dir(self, request: InstallRequest) -> Path:
        """Check an upload before its body is read; the directory to stream it into."""
        config = self.committer.config
        self._check_id(request.plugin_id)
        if not valid_version(bare_version(request.version or "")):
            raise InvalidRequest(
                f"?version={request.version or ''}: an upload needs a version such as 1.0.0"
            )
        plugins_dir = self._plugins_dir(config)
        self._check_upload_source(config, request.plugin_id)
        return self._arch_dir(plugins_dir)

    def install_upload(
        self, request: InstallRequest, received: Fetched, sha256: str | None
    ) -> Installed:
        """Install a file received into `upload_dir(request)` (a zip in the store's layout,
        or the library itself), checked against `sha256` if given. The received file is
        gone afterwards, installed or not."""
        try:
            self.upload_dir(request)
            if sha256 is not None and received.sha256 != sha256.strip().lower():
                raise UploadInvalid(
                    f"{request.plugin_id}: sha256 mismatch for the upload: ?sha256={sha256},"
                    f" the body's is {received.sha256}; the file was not installed",
                    plugin_id=request.plugin_id,
                )
        except BaseException:
            received.path.unlink(missing_ok=True)
            raise
        config = self.committer.config
        version = bare_version(request.version or "")
        manifest = {"version": version, "source-id": UPLOAD_SOURCE}
        try:
            return self._finish(
                request,
                received,
                version=version,
                plugins_dir=config.plugins_dir(),
                manifest=manifest,
                source=None,
                install_type=UPLOAD_SOURCE,
                config=config,
            )
        except PluginInstallFailed as exc:
            # The file is the caller's: a 400 of its own, not the store's bad gateway.
            raise UploadInvalid(exc.message, plugin_id=request.plugin_id) from None

    def _check_upload_source(self, config: HostConfig, plugin_id: str) -> None:
        entry = config.plugins.configs.get(plugin_id)
        if entry is None or entry.store is None:
            return
        installed = str((entry.store.model_extra or {}).get("source-id") or "").strip()
        if installed and installed != UPLOAD_SOURCE:
            raise StoreSourceConflict(
                f"plugin {plugin_id} was installed from store source {installed}; delete it"
                f" (DELETE /v0/management/plugins/{plugin_id}) before uploading a file for it",
                plugin_id=plugin_id,
            )

    # -- both --------------------------------------------------------------------------

    def _finish(
        self,
        request: InstallRequest,
        fetched: Fetched,
        *,
        version: str,
        plugins_dir: Path,
        manifest: Mapping[str, Any],
        source: Source | None,
        install_type: str,
        config: HostConfig,
    ) -> Installed:
        plugin_id = request.plugin_id
        target = target_path(plugins_dir, plugin_id, version, self.goos, self.goarch)
        try:
            staged = self._library_of(fetched.path, plugin_id, version, target.parent)
        finally:
            fetched.path.unlink(missing_ok=True)
        placement = Placement(staged, target)
        try:
            problem = library_problem(staged)
            if problem is not None:
                # Named as the file it would have become, not the temp file it was.
                problem = problem.replace(str(staged), str(target))
                raise PluginInstallFailed(f"{plugin_id}: {problem}", plugin_id=plugin_id)
            verdict = verify_installed(config, plugin_id, staged, target, request.signature)
            isolation = installed_isolation(request.isolation, verdict)
            entry = {"enabled": True, "isolation": isolation, "store": dict(manifest)}
            # The signature goes beside the file before the reload loads it; a stale one
            # (of a file this replaces) must not be read as this file's.
            sig = signature_path(target)
            if verdict.signed and request.signature is not None:
                write_atomically(sig, request.signature)
            else:
                sig.unlink(missing_ok=True)
            try:
                self.committer.install_file(plugin_id, placement.place, entry)
            except BaseException:
                sig.unlink(missing_ok=True)
                raise
            placement.finish()
        finally:
            placement.discard()
        log.info(
            "store: installed %s %s (%s) at %s, isolation %s",
            plugin_id, version, install_type, target, isolation,
        )  # fmt: skip
        return Installed(
            plugin_id, version, install_type, target, source, isolation, config.plugins.enabled
        )

    def _library_of(self, archive: Path, plugin_id: str, version: str, directory: Path) -> Path:
        """The library to install, staged in `directory`: unpacked from a zip, or the file
        itself (an upload of the bare library)."""
        fd, staged = staging_file(directory)
        try:
            with os.fdopen(fd, "wb") as out:
                if is_zip(archive):
                    extract_library(
                        archive, out, plugin_id=plugin_id, version=version, goos=self.goos,
                        cap=self.committer.config.plugins.store_max_bytes,
                    )  # fmt: skip
                else:
                    with archive.open("rb") as src:
                        while chunk := src.read(64 * 1024):
                            out.write(chunk)
        except UnpackFailed as exc:
            staged.unlink(missing_ok=True)
            raise PluginInstallFailed(f"{plugin_id}: {exc}", plugin_id=plugin_id) from None
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged

    def _check_id(self, plugin_id: str) -> None:
        if not is_valid_id(plugin_id):
            raise InvalidPluginId(f"{plugin_id!r} is not a valid plugin ID")

    def _plugins_dir(self, config: HostConfig) -> Path:
        root = config.plugins_dir()
        problem = plugins_dir_problem(root)
        if problem is not None:
            raise PluginDirectoryInvalid(problem)
        return root

    def _arch_dir(self, plugins_dir: Path) -> Path:
        return plugins_dir / self.goos / self.goarch


def parse_checksums(data: bytes) -> dict[str, str]:
    """checksums.txt (`<sha256>  <name>` lines, `*name` for binary mode) as name -> hash."""
    out: dict[str, str] = {}
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        digest = fields[0].lower()
        if len(fields) < 2 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise PluginInstallFailed(f"checksums.txt line {number}: expected '<sha256>  <file>'")
        out[fields[1].removeprefix("*")] = digest
    return out


def _verify(plugin_id: str, what: str, fetched: Fetched, expected: str) -> None:
    if fetched.sha256 != expected:
        raise PluginInstallFailed(
            f"{plugin_id}: sha256 mismatch for {what}: expected {expected}, got"
            f" {fetched.sha256}; the file was not installed",
            plugin_id=plugin_id,
        )


def _manifest(found: Sourced, version: str, plan: InstallPlan, tag: str | None) -> dict[str, Any]:
    """The `store:` entry the Go host writes (its manifest, kebab-case keys)."""
    plugin = found.plugin
    out: dict[str, Any] = {}
    if plan.type == DIRECT:
        out["schema-version"] = 2
    fields = {
        "id": plugin.id,
        "name": plugin.name,
        "description": plugin.description,
        "author": plugin.author,
        "version": version,
        "release-tag": tag,
        "repository": plugin.repository if plan.type == GITHUB_RELEASE else "",
        "logo": plugin.logo,
        "homepage": plugin.homepage,
        "license": plugin.license,
        "tags": list(plugin.tags),
        "source-id": found.source.id,
        "source-name": found.source.name,
        "source-url": found.source.url,
    }
    out.update({k: v for k, v in fields.items() if v})
    install: dict[str, Any] = {"type": plan.type}
    if plan.artifacts:
        install["artifacts"] = [_artifact(a) for a in plan.artifacts]
    out["install"] = install
    return out


def _artifact(artifact: Artifact) -> dict[str, Any]:
    out = artifact.model_dump()
    if not out["size"]:
        del out["size"]
    return out
