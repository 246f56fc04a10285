"""Replicas sharing one config through PostgreSQL: the store, its tables, its listener.

migrations: the tables and their upgrades · copy: the replica's local copy of the last
good config · store: PgConfigStore, the ConfigStore of `serve --config-store postgresql://`.
psycopg is imported only by a host that uses the store (the `postgres` extra).
"""

from .store import CONFIG_STORE_ENV, ConfigStoreStatus, PgConfigStore, redact

__all__ = ["CONFIG_STORE_ENV", "ConfigStoreStatus", "PgConfigStore", "redact"]
