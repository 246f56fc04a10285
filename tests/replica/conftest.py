"""The PostgreSQL server of the replica tests (one per session, a database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from .postgres import PostgresServer, require_bin

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(require_bin())
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.remove()


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """A fresh, empty database of the session's server: its DSN."""
    return postgres.create_database(f"replica_{next(_numbers)}")
