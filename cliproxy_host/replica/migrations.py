"""The store's tables, created and upgraded in order in any database the host is given."""

from __future__ import annotations

from typing import Final

import psycopg

# Held while migrating, so that replicas starting together create the tables once.
MIGRATION_LOCK: Final = 0x636C6970  # "clip"

# The notification channel every write announces itself on (payload: the plugin ID).
CHANNEL: Final = "cliproxy_config"

# Each entry upgrades the tables from the version before it; never edit a published one.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE cliproxy_plugin_configs (
        plugin_id text PRIMARY KEY,
        -- NULL: deleted. The row stays, so its version keeps counting up.
        settings jsonb,
        version bigint NOT NULL
    );
    CREATE TABLE cliproxy_store_meta (
        key text PRIMARY KEY,
        value jsonb NOT NULL
    );
    """,
    """
    -- The library each plugin was last installed or uploaded with, by sha256, and its
    -- detached signature (the content of a .sig), if it came with one.
    CREATE TABLE cliproxy_plugin_files (
        plugin_id text PRIMARY KEY,
        name text NOT NULL,
        sha256 text NOT NULL,
        data bytea NOT NULL,
        signature bytea
    );
    """,
)


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the tables up to the last migration; answers the schema version now."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS cliproxy_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM cliproxy_schema").fetchone()
        done = int(row[0]) if row is not None and row[0] is not None else 0  # type: ignore[call-overload]
        for number, statements in enumerate(MIGRATIONS[done:], start=done + 1):
            conn.execute(statements.encode())
            conn.execute("INSERT INTO cliproxy_schema (version) VALUES (%s)", (number,))
    return len(MIGRATIONS)
