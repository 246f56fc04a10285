"""host.auth.list / get / get_runtime / save: credential files in the config's auth dir."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from ..errors import HostCallFailed, InvalidRequest, PluginError, UnknownAuth

__all__ = ["MAX_NAME_BYTES", "AuthStore", "auth_index", "go_time"]

log = logging.getLogger(__name__)

# NAME_MAX of the common Unix file systems: a longer name could never be written.
MAX_NAME_BYTES: Final = 255
# The Go host renames legacy config-style keys before it reads a credential
# (sdk/cliproxy/auth/metadata_keys.go); the index and the entry see the canonical ones.
_CANONICAL_KEYS: Final = {
    "api-key": "api_key",
    "base-url": "base_url",
    "disable-cooling": "disable_cooling",
    "excluded-models": "excluded_models",
    "fingerprint-profile": "fingerprint_profile",
    "model-aliases": "model_aliases",
    "proxy-url": "proxy_url",
    "request-retry": "request_retry",
    "request-scoped-errors": "request_scoped_errors",
    "tool-prefix-disabled": "tool_prefix_disabled",
}
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
# Go's encoding/json writes a zero time.Time even with omitempty.
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"
_GO_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def auth_index(seed: str) -> str:
    """The Go host's auth_index: the first 8 bytes of sha256(seed), as 16 hex digits."""
    return hashlib.sha256(seed.strip().encode()).hexdigest()[:16]


def go_time(ns: int) -> str:
    """A UTC time in nanoseconds as Go's time.Time marshals it (RFC 3339, trailing zeros cut)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def _invalid(message: str) -> PluginError:
    return InvalidRequest(message, retryable=False, http_status=400)


@dataclass(frozen=True, slots=True)
class _Record:
    """One credential file as read now: its list entry and, if it holds an object, its JSON."""

    entry: dict[str, Any]
    document: dict[str, Any] | None


class AuthStore:
    """The credentials of the auth dir, read from disk on every call (no cache to go stale).

    Every record is a file (`source` "file"): this host keeps no runtime-only credentials,
    so `runtime_only` is never set. Saves are atomic renames, so a reader sees the old file
    or the new one, never a torn one.
    """

    def __init__(self, directory: Path, max_file_bytes: int) -> None:
        self.directory = directory
        self.max_file_bytes = max_file_bytes
        # Saves of one host are serialised, so that the directory is created once and
        # two saves of one name land in the order they were made.
        self._save_lock = threading.Lock()

    def configure(self, directory: Path, max_file_bytes: int) -> None:
        """Another auth-dir or size cap (a hot reload): read from the next call on."""
        with self._save_lock:  # a save under way finishes where it began
            self.directory = directory
            self.max_file_bytes = max_file_bytes

    # -- callbacks -------------------------------------------------------------------

    def list_files(self, plugin_id: str, request: Mapping[str, Any]) -> object:
        """host.auth.list -> {"files": [entry...]}, sorted by name, case-insensitively."""
        entries = [record.entry for record in self._records()]
        entries.sort(key=lambda entry: str(entry["name"]).lower())
        return {"files": entries}

    def get(self, plugin_id: str, request: Mapping[str, Any]) -> object:
        """host.auth.get {"auth_index"} -> {"auth_index", "name", "path", "json"}."""
        index = _index_of(request, "host.auth.get")
        record = self._find(index)
        if record.document is None:
            raise UnknownAuth(
                f"host.auth.get: the auth file {record.entry['path']} for auth_index {index}"
                f" cannot be read: {record.entry['status_message']}"
            )
        return {
            "auth_index": index,
            "name": record.entry["name"],
            "path": record.entry["path"],
            "json": record.document,
        }

    def get_runtime(self, plugin_id: str, request: Mapping[str, Any]) -> object:
        """host.auth.get_runtime {"auth_index"} -> {"auth": entry}."""
        return {"auth": self._find(_index_of(request, "host.auth.get_runtime")).entry}

    def save(self, plugin_id: str, request: Mapping[str, Any]) -> object:
        """host.auth.save {"name", "json"} -> {"name", "path"}: one file, 0600, atomically."""
        name = _checked_name(request.get("name"))
        document = request.get("json")
        if type(document) is not dict:
            raise _invalid(
                f'host.auth.save: "json" must be a JSON object (the credential), got'
                f" {_kind(document)}; nothing was written"
            )
        data = orjson.dumps(document)
        if len(data) > self.max_file_bytes:
            raise _invalid(
                f'host.auth.save: "json" is {len(data)} bytes, over the'
                f" {self.max_file_bytes}-byte cap (remote-management.max-body-bytes);"
                " nothing was written"
            )
        with self._save_lock:
            path = self._write(name, data)
        return {"name": name, "path": str(path)}

    # -- files -----------------------------------------------------------------------

    def _root(self) -> Path:
        return Path(os.path.abspath(os.path.expanduser(self.directory)))

    def _write(self, name: str, data: bytes) -> Path:
        root = self._root()
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HostCallFailed(
                f"host.auth.save: cannot create the auth dir {root}: {exc}"
            ) from None
        target = root / name
        # mkstemp creates the file 0600 in the same dir; replacing a symlink replaces the
        # link itself, so a save never writes through a link to somewhere else.
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise HostCallFailed(f"host.auth.save: cannot write {target}: {exc}") from None
        with contextlib.suppress(OSError):
            handle = os.open(root, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        return target

    def _records(self) -> list[_Record]:
        root = self._root()
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []  # no credential saved yet
        except OSError as exc:
            raise HostCallFailed(f"host.auth: cannot read the auth dir {root}: {exc}") from None
        real_root = os.path.realpath(root)
        records = []
        for name in names:
            if not name.lower().endswith(".json"):
                continue
            record = self._read(root, real_root, name)
            if record is not None:
                records.append(record)
        return records

    def _read(self, root: Path, real_root: str, name: str) -> _Record | None:
        path = root / name
        real = os.path.realpath(path)
        if os.path.dirname(real) != real_root:
            log.warning("auth dir %s: %s is a link out of the auth dir; not followed", root, name)
            return None
        # O_NOFOLLOW: a link swapped in after the check above is refused, not followed;
        # O_NONBLOCK: a FIFO named *.json cannot hang the call (it is skipped below).
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:
            handle = os.open(real, flags | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None  # removed, or swapped for a link, since the listing
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_file_bytes:
            os.close(handle)
            if stat.S_ISREG(info.st_mode):
                log.warning(
                    "auth dir %s: %s is %d bytes, over the %d-byte cap; skipped",
                    root,
                    name,
                    info.st_size,
                    self.max_file_bytes,
                )
            return None  # a dir or a FIFO is no credential
        try:
            with os.fdopen(handle, "rb") as file:
                data = file.read(self.max_file_bytes + 1)
        except OSError as exc:
            return _Record(_entry(path, info, {}, f"cannot be read: {exc}"), None)
        if len(data) > self.max_file_bytes:
            log.warning("auth dir %s: %s grew over the cap while read; skipped", root, name)
            return None
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return _Record(
                _entry(path, info, {}, f"not JSON ({exc}); fix or remove the file"), None
            )
        if type(document) is not dict:
            problem = f"not a JSON object (got {_kind(document)}); fix or remove the file"
            return _Record(_entry(path, info, {}, problem), None)
        return _Record(_entry(path, info, document, None), document)

    def _find(self, index: str) -> _Record:
        for record in self._records():
            if record.entry["auth_index"] == index:
                return record
        raise UnknownAuth(
            f"auth not found for auth_index {index}: host.auth.list gives the indexes of"
            f" the credentials in {self._root()}"
        )


# -- entries -------------------------------------------------------------------------


def _entry(
    path: Path, info: os.stat_result, raw: Mapping[str, Any], problem: str | None
) -> dict[str, Any]:
    """A HostAuthFileEntry (sdk/pluginapi/types.go) for one file, omitempty fields left out."""
    metadata = {_CANONICAL_KEYS.get(key, key): value for key, value in raw.items()}
    raw_type = metadata.get("type")
    auth_type = raw_type.strip().lower() if isinstance(raw_type, str) else ""
    # As the Go host's file loader names providers; a file without a type, which that
    # loader skips, is listed here as "unknown" (the provider its host.auth.save gives it).
    provider = "gemini-cli" if auth_type == "gemini" else auth_type or "unknown"
    email = _trimmed(metadata, "email")
    disabled = metadata.get("disabled") is True
    mtime = go_time(info.st_mtime_ns)
    entry: dict[str, Any] = {
        "id": path.name,
        # sdk/cliproxy/auth/types.go indexSeed: "<type>:<absolute path>" for a .json file.
        "auth_index": auth_index(f"{auth_type or provider}:{path}"),
        "name": path.name,
        "type": provider,
        "provider": provider,
        "label": email or provider,
        "status": "error" if problem else "disabled" if disabled else "active",
        "status_message": f"{path.name}: {problem}" if problem else "",
        "disabled": disabled,
        "source": "file",
        "path": str(path),
        "size": info.st_size,
        # This host does not keep load times: created and updated are the file's mtime.
        "modtime": mtime,
        "updated_at": mtime,
        "created_at": mtime,
        "last_refresh": _ZERO_TIME,
        "next_retry_after": _ZERO_TIME,
        "email": email,
        "project_id": _trimmed(metadata, "project_id"),
        "priority": _priority(metadata.get("priority")),
        "note": _trimmed(metadata, "note"),
        "websockets": _go_bool(metadata.get("websockets")) is True,
    }
    # Go's omitempty: zero strings, numbers and false are left out; times never are.
    return {key: value for key, value in entry.items() if value or key == "name"}


def _trimmed(metadata: Mapping[str, Any], key: str) -> str:
    value = metadata.get(key)
    return value.strip() if isinstance(value, str) else ""


def _priority(raw: object) -> int:
    """parsePriorityValue: an int, a float (truncated) or a decimal string; else 0."""
    if isinstance(raw, bool):
        return 0
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"[+-]?\d+", raw.strip()):
        return int(raw.strip())
    return 0


def _go_bool(raw: object) -> bool | None:
    """parseWebsocketsValue: a bool or a string strconv.ParseBool accepts."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text in _GO_TRUE:
            return True
        if text in _GO_FALSE:
            return False
    return None


# -- requests ------------------------------------------------------------------------


def _index_of(request: Mapping[str, Any], method: str) -> str:
    index = request.get("auth_index")
    if not isinstance(index, str) or not index.strip():
        raise _invalid(f'{method}: "auth_index" is required (a string from host.auth.list)')
    return index.strip()


def _checked_name(raw: object) -> str:
    """The file name of a save: a plain `<name>.json` in the auth dir, or a refusal."""
    if not isinstance(raw, str):
        raise _invalid(f'host.auth.save: "name" must be a string, got {_kind(raw)}')
    name = raw.strip()
    problem = None
    if not name:
        problem = "is empty"
    elif "\0" in name:
        problem = "contains a NUL byte"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator ('/' or '\\')"
    elif _DRIVE.match(name):
        problem = "starts with a drive letter"
    elif ".." in name:
        problem = "contains '..'"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"is {len(name.encode())} bytes long, over {MAX_NAME_BYTES}"
    elif not name.lower().endswith(".json"):
        problem = "does not end with .json"
    if problem is not None:
        raise _invalid(
            f"host.auth.save: the name {name[:80]!r} {problem}; give a plain file name"
            ' such as "claude-me.json"; nothing was written'
        )
    return name


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
