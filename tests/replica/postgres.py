"""A real PostgreSQL for tests: initdb in a temp dir, a Unix socket only, no network."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Debian installs the server's programs under /usr/lib/postgresql/<major>/bin, off PATH.
_DEBIAN_BIN = "/usr/lib/postgresql/*/bin"


def find_bin() -> Path | None:
    """The directory holding initdb and pg_ctl, or None if PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(glob.glob(_DEBIAN_BIN), key=lambda p: int(Path(p).parent.name))
    return Path(versions[-1]) if versions else None


def require_bin() -> Path:
    """PostgreSQL's bin dir; without it the test skips, or fails under CI=true (.ci/run
    installs Debian's postgresql, so a CI without it is broken, not excused)."""
    found = find_bin()
    if found is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class PostgresServer:
    """One cluster in a temp dir; as the `postgres` user when the tests run as root
    (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        # Not under pytest's tmp dir: that is private to root, and the server may not be.
        self.root = Path(tempfile.mkdtemp(prefix="cliproxy-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E",
            "UTF8",
        )  # fmt: skip

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&user=postgres"

    def start(self) -> None:
        # listen_addresses='': no TCP at all; the socket in our own dir.
        options = f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "30", "start",
                  "-l", str(self.root / "server.log"))  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", str(self.socket_dir), "-U", "postgres", name)
        return self.dsn(name)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        cmd = [*self._as_user, str(self._bin / program), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
