"""PgConfigStore: the plugins config of every replica, kept in PostgreSQL."""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from ..config.files import read_file
from ..config.schema import MAX_CONFIG_FILE_BYTES, MAX_NESTING_DEPTH, HostConfig
from ..config.yamledit import parse_yaml, plain, round_trip_yaml
from ..errors import ConfigConflict, ConfigError, ConfigSaveFailed
from ..trust.digest import sha256_hex
from .copy import Rows, Taken, load_copy, load_taken, save_copy, save_taken
from .files import local_trust, place, refusal, remove_taken, safe_name
from .migrations import CHANNEL, migrate

log = logging.getLogger(__name__)

# The variable that stands for `serve --config-store`.
CONFIG_STORE_ENV: Final = "CLIPROXY_CONFIG_STORE"
CONNECT_TIMEOUT_S: Final = 5
# Reconnecting after the database went away: from the first delay, doubling, up to the last.
BACKOFF_FIRST_S: Final = 0.1
BACKOFF_MAX_S: Final = 5.0
# How often the listener wakes without a notification (to stop, and to probe the link).
LISTEN_TICK_S: Final = 0.5

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact(dsn: str) -> str:
    """The DSN as it may be logged and shown: without its password."""
    return _PASSWORD.sub(r"\1***@", dsn)


@dataclass(frozen=True)
class ConfigStoreStatus:
    """What the management list says of the store: reachable or not, since when, why."""

    kind: str
    location: str
    connected: bool
    error: str | None
    since: float | None  # time.time() of the last change of `connected`


Edit = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class PgConfigStore:
    """The `plugins.configs` entries of every replica, one row per plugin in PostgreSQL.

    The rest of the config (listen keys, plugins dir, trusted keys) is the replica's own
    local file, read once at start. The file's `plugins.configs` is imported only into a
    database that has never held any; after that the database is the truth and the file
    is never written. A write is one transaction on the plugin's row and succeeds only
    if the row's version is the one this replica last saw (ConfigConflict otherwise, a
    409: never a lost update); it ends with a NOTIFY, on which every replica reads the
    rows again and applies them. A replica keeps a local copy of the last good rows in
    `state_dir`, so it keeps (and can restart with) that config while the database is
    down; the listener reconnects with backoff.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dsn: str,
        *,
        state_dir: Path | None = None,
        protect_secret: Callable[[str], str] | None = None,
    ) -> None:
        self._path = Path(path)
        self._dsn = dsn
        self._where = redact(dsn)
        self._state_dir = state_dir or self._path.absolute().parent / ".cliproxy-replica"
        self._protect_secret = protect_secret
        self._lock = threading.Lock()
        self._local = _read_local(self._path)
        self._on_change: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._connected = False
        self._error: str | None = None
        self._since: float | None = None
        try:
            rows = self._first_read()
            self._mark(connected=True, error=None)
        except psycopg.Error as exc:
            saved = load_copy(self._state_dir)
            if saved is None:
                raise ConfigError(
                    f"config store {self._where}: cannot reach the database ({_reason(exc)})"
                    f" and there is no local copy in {self._state_dir}: start the database"
                    " or correct --config-store / CLIPROXY_CONFIG_STORE"
                ) from None
            rows = saved
            self._mark(connected=False, error=_reason(exc))
            log.error(
                "config store %s unreachable (%s): serving the local copy in %s until it is back",
                self._where,
                _reason(exc),
                self._state_dir,
            )
        self._rows = rows
        self._config = self._compose(rows)
        save_copy(self._state_dir, rows)
        # The files this replica holds as the database has them (taken, published, or
        # found in place), by plugin: deleted here when the plugin's row goes.
        self._taken: Taken = load_taken(self._state_dir)
        # plugin ID -> the sha256 of a file judged and not taken (refused, or badly named).
        self._judged: dict[str, str] = {}
        if self._connected:
            with psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                self._sync_files(conn)

    # -- what HostService reads -------------------------------------------------------

    @property
    def config(self) -> HostConfig:
        return self._config

    @property
    def status(self) -> ConfigStoreStatus:
        return ConfigStoreStatus(
            "postgresql", self._where, self._connected, self._error, self._since
        )

    def start(self, on_change: Callable[[], None]) -> None:
        """Listen for other replicas' writes; on_change runs after each one is read."""
        self._on_change = on_change
        self._listener = threading.Thread(target=self._listen, name="config-listen", daemon=True)
        self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)

    # -- writes (ConfigStore's interface) ---------------------------------------------

    def replace_plugin_config(self, plugin_id: str, settings: Mapping[str, Any]) -> HostConfig:
        return self._write(plugin_id, lambda _current: dict(settings))

    def patch_plugin_config(self, plugin_id: str, patch: Mapping[str, Any]) -> HostConfig:
        def edit(current: dict[str, Any] | None) -> dict[str, Any]:
            entry = dict(current or {})
            for key, value in patch.items():
                if value is not None:
                    entry[key] = value
                else:
                    entry.pop(key, None)
            return entry

        return self._write(plugin_id, edit)

    def set_enabled(self, plugin_id: str, enabled: bool) -> HostConfig:
        return self._write(plugin_id, lambda current: {**(current or {}), "enabled": enabled})

    def delete_plugin(self, plugin_id: str) -> HostConfig:
        return self._write(plugin_id, lambda _current: None)

    def protect_secret_now(self) -> HostConfig:
        """Hash a plaintext management key in memory; the replica never writes its file."""
        management = self._local.get("remote-management")
        key = management.get("secret-key") if isinstance(management, dict) else None
        if self._protect_secret is not None and isinstance(key, str) and key:
            assert isinstance(management, dict)
            management["secret-key"] = self._protect_secret(key)
            with self._lock:
                self._config = self._compose(self._rows)
        return self._config

    def reload(self) -> HostConfig:
        """The database is the truth: read its rows again."""
        with self._lock:
            self._refresh_locked()
        return self._config

    def reload_if_changed(self) -> HostConfig | None:
        """The file is read only at start: its edits are not this store's changes."""
        return None

    def _write(self, plugin_id: str, edit: Edit) -> HostConfig:
        with self._lock:
            known = self._rows.get(plugin_id)
            try:
                with psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                    rows = self._write_in(conn, plugin_id, known, edit)
            except psycopg.OperationalError as exc:
                raise ConfigSaveFailed(
                    f"config store {self._where} is unreachable ({_reason(exc)}): the change"
                    f" to plugins.configs.{plugin_id} was not saved; retry when it is back",
                    plugin_id=plugin_id,
                ) from None
            self._install(rows)
            return self._config

    def _write_in(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        plugin_id: str,
        known: tuple[dict[str, Any], int] | None,
        edit: Edit,
    ) -> Rows:
        with conn.transaction():
            row = conn.execute(
                "SELECT settings, version FROM cliproxy_plugin_configs"
                " WHERE plugin_id = %s FOR UPDATE",
                (plugin_id,),
            ).fetchone()
            current: dict[str, Any] | None = row[0] if row is not None else None
            version = int(row[1]) if row is not None else 0
            seen = known[1] if known is not None else None
            # A deleted row (settings NULL) is as good as no row for a replica that has none.
            if (current is None and seen is not None) or (current is not None and seen != version):
                raise ConfigConflict(
                    f"plugins.configs.{plugin_id} was changed by another replica (version"
                    f" {version}, this one had {seen or 'none'}): read it again and retry",
                    plugin_id=plugin_id,
                )
            new = edit(copy.deepcopy(current))
            if new == current:
                return self._rows
            rows = dict(self._rows)
            if new is None:
                rows.pop(plugin_id, None)
            else:
                rows[plugin_id] = (new, version + 1)
            self._compose(rows)  # validated as a whole before anything is written
            conn.execute(
                "INSERT INTO cliproxy_plugin_configs (plugin_id, settings, version)"
                " VALUES (%s, %s, %s) ON CONFLICT (plugin_id)"
                " DO UPDATE SET settings = excluded.settings, version = excluded.version",
                (plugin_id, None if new is None else Jsonb(new), version + 1),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, plugin_id))
        return rows

    def publish_file(self, plugin_id: str, name: str, data: bytes, signature: bytes | None) -> None:
        """Store a plugin's installed library (by sha256) for the other replicas to take."""
        digest = sha256_hex(data)
        try:
            with (
                psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn,
                conn.transaction(),
            ):
                conn.execute(
                    "INSERT INTO cliproxy_plugin_files (plugin_id, name, sha256, data, signature)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (plugin_id) DO UPDATE SET"
                    " name = excluded.name, sha256 = excluded.sha256, data = excluded.data,"
                    " signature = excluded.signature",
                    (plugin_id, name, digest, data, signature),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, plugin_id))
        except psycopg.OperationalError as exc:
            raise ConfigSaveFailed(
                f"config store {self._where} is unreachable ({_reason(exc)}): the file of"
                f" {plugin_id} was not stored; retry when it is back",
                plugin_id=plugin_id,
            ) from None
        with self._lock:
            self._hold(plugin_id, digest, name)  # this replica has it already

    def forget_file(self, plugin_id: str) -> None:
        """The plugin was deleted here: its stored file goes too, and every replica that
        took it deletes its own copy."""
        try:
            with (
                psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn,
                conn.transaction(),
            ):
                gone = conn.execute(
                    "DELETE FROM cliproxy_plugin_files WHERE plugin_id = %s", (plugin_id,)
                )
                if gone.rowcount:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, plugin_id))
        except psycopg.OperationalError as exc:
            raise ConfigSaveFailed(
                f"config store {self._where} is unreachable ({_reason(exc)}): the stored file"
                f" of {plugin_id} was not deleted, and other replicas keep theirs; retry the"
                " delete when it is back",
                plugin_id=plugin_id,
            ) from None
        with self._lock:
            if self._taken.pop(plugin_id, None) is not None:
                self._save_taken()

    def _hold(self, plugin_id: str, digest: str, name: str) -> None:
        if self._taken.get(plugin_id) != (digest, name):
            self._taken[plugin_id] = (digest, name)
            self._save_taken()

    def _save_taken(self) -> None:
        try:
            save_taken(self._state_dir, self._taken)
        except OSError as exc:
            log.warning("cannot save the taken files' record in %s: %s", self._state_dir, exc)

    def _sync_files(self, conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        """Write the files other replicas stored that this one lacks, each only if its
        local pin or trusted keys admit it; answers whether any was written."""
        wanted = conn.execute(
            "SELECT plugin_id, name, sha256 FROM cliproxy_plugin_files"
        ).fetchall()
        plugins_dir = self._config.plugins_dir()
        written = self._drop_deleted(plugins_dir, {str(row[0]) for row in wanted})
        for plugin_id, name, digest in wanted:
            held = self._taken.get(plugin_id) == (digest, name)
            if held or self._judged.get(plugin_id) == digest:
                continue
            relative = safe_name(str(name))
            if relative is None:
                log.error("config store: the file of %s is named %r, outside the plugins"
                          " dir: not taken", plugin_id, name)  # fmt: skip
                self._judged[plugin_id] = digest
                continue
            target = plugins_dir.joinpath(*relative.parts)
            if target.is_file() and sha256_hex(target.read_bytes()) == digest:
                self._hold(plugin_id, digest, name)
                continue
            row = conn.execute(
                "SELECT data, signature FROM cliproxy_plugin_files WHERE plugin_id = %s",
                (plugin_id,),
            ).fetchone()
            if row is None:
                continue
            data, signature = bytes(row[0]), None if row[1] is None else bytes(row[1])
            pin, keys = local_trust(self._local, plugin_id)
            why = refusal(plugin_id, data, signature, pin, keys)
            if why is not None:
                self._judged[plugin_id] = digest  # judged once per version of the file
                log.error("config store: not taking the file of %s (%s): %s", plugin_id, name, why)
                continue
            try:
                place(plugins_dir, relative, data, signature)
            except OSError as exc:
                log.error("config store: cannot write the file of %s: %s", plugin_id, exc)
                continue
            self._hold(plugin_id, digest, name)
            log.info("config store: took the file of %s (%s, sha256 %s)", plugin_id, name, digest)
            written = True
        return written

    def _drop_deleted(self, plugins_dir: Path, stored: set[str]) -> bool:
        """Delete the files this replica holds of plugins whose stored file is gone (the
        plugin was deleted on another replica); answers whether any was deleted."""
        deleted = False
        gone = sorted(set(self._taken) - stored)
        for plugin_id in gone:
            digest, name = self._taken.pop(plugin_id)
            relative = safe_name(name)
            if relative is not None and remove_taken(plugins_dir, relative, digest):
                log.info("config store: %s was deleted on another replica: deleted its file %s",
                         plugin_id, name)  # fmt: skip
                deleted = True
        if gone:
            self._save_taken()
        for plugin_id in set(self._judged) - stored:
            del self._judged[plugin_id]
        return deleted

    # -- reading ----------------------------------------------------------------------

    def _first_read(self) -> Rows:
        with psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            migrate(conn)
            self._import_once(conn)
            return _select_rows(conn)

    def _import_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """The local file's plugins.configs into a database that has never had any."""
        plugins = self._local.get("plugins")
        configs = plugins.get("configs") if isinstance(plugins, dict) else None
        with conn.transaction():
            done = conn.execute(
                "INSERT INTO cliproxy_store_meta (key, value) VALUES ('imported', %s)"
                " ON CONFLICT (key) DO NOTHING",
                (Jsonb({"from": os.fspath(self._path.absolute()), "at": time.time()}),),
            )
            if done.rowcount == 0:
                return
            for plugin_id, settings in (configs or {}).items():
                if isinstance(settings, dict):
                    conn.execute(
                        "INSERT INTO cliproxy_plugin_configs (plugin_id, settings, version)"
                        " VALUES (%s, %s, 1) ON CONFLICT (plugin_id) DO NOTHING",
                        (str(plugin_id), Jsonb(settings)),
                    )
        log.info(
            "config store %s: imported %d plugin entries from %s (the database is the truth now)",
            self._where,
            len(configs or {}),
            self._path,
        )

    def _compose(self, rows: Rows) -> HostConfig:
        """The local file's settings with the database's plugins.configs."""
        data = copy.deepcopy(self._local)
        plugins = data.get("plugins")
        if not isinstance(plugins, dict):
            plugins = data["plugins"] = {}
        plugins["configs"] = {pid: copy.deepcopy(s) for pid, (s, _v) in sorted(rows.items())}
        config = HostConfig.from_mapping(data, f"{self._where} (with {self._path})")
        config._path = self._path.absolute()
        return config

    def _install(self, rows: Rows) -> bool:
        """Make `rows` the store's config (caller holds the lock); False if nothing changed."""
        if rows == self._rows:
            return False
        self._config = self._compose(rows)
        self._rows = rows
        try:
            save_copy(self._state_dir, rows)
        except OSError as exc:
            log.warning("cannot save the local copy in %s: %s", self._state_dir, exc)
        return True

    def _refresh_locked(self, conn: psycopg.Connection[tuple[Any, ...]] | None = None) -> bool:
        if conn is None:
            with psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT_S) as own:
                return self._refresh_locked(own)
        rows = _select_rows(conn)
        try:
            return self._install(rows)
        except ConfigError as exc:
            log.error("the database's config is invalid, the previous one stays: %s", exc)
            return False

    # -- the listener -----------------------------------------------------------------

    def _listen(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Whatever changed while we were not listening.
                    self._refreshed(conn)
                    if not self._connected:
                        log.warning("config store %s is reachable again", self._where)
                    self._mark(connected=True, error=None)
                    delay = BACKOFF_FIRST_S
                    while not self._stop.is_set():
                        got = list(conn.notifies(timeout=LISTEN_TICK_S, stop_after=1))
                        if got:
                            self._refreshed(conn)
                        else:
                            conn.execute("SELECT 1")  # a dead link raises here
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                if self._connected:
                    log.error(
                        "config store %s unreachable (%s): the last good config stays in"
                        " force; reconnecting",
                        self._where,
                        _reason(exc),
                    )
                self._mark(connected=False, error=_reason(exc))
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _refreshed(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with self._lock:
            # Files first: an entry that enables a plugin finds its file in place.
            wrote = self._sync_files(conn)
            changed = self._refresh_locked(conn) or wrote
        if changed and self._on_change is not None:
            self._on_change()

    def _mark(self, *, connected: bool, error: str | None) -> None:
        if connected != self._connected or self._since is None:
            self._since = time.time()
        self._connected = connected
        self._error = error


def _select_rows(conn: psycopg.Connection[tuple[Any, ...]]) -> Rows:
    cursor = conn.execute(
        "SELECT plugin_id, settings, version FROM cliproxy_plugin_configs"
        " WHERE settings IS NOT NULL"
    )
    return {str(pid): (dict(settings), int(version)) for pid, settings, version in cursor}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_local(path: Path) -> dict[str, Any]:
    source = os.fspath(path)
    file = read_file(path, source, limit=MAX_CONFIG_FILE_BYTES)
    if file is None:
        return {}
    data = plain(
        parse_yaml(round_trip_yaml(file.text), file.text, source, max_depth=MAX_NESTING_DEPTH)
    )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    HostConfig.from_mapping(data, source)  # the file's own errors, worded as the file's
    return data
