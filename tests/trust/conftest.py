"""Fixtures of the trust tests: a signing key pair made by the CLI, real files to tamper with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from cliproxy_host.cli import main

from ..conftest import CompilePlugin


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: str


def keygen(out: Path, capsys: pytest.CaptureFixture[str]) -> KeyPair:
    """A key pair made by `cliproxy-host keygen`, its public key read off what it prints."""
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    public = next(
        line.split(":", 1)[1].strip() for line in printed.splitlines() if "public key:" in line
    )
    return KeyPair(out, public)


@pytest.fixture
def author(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> KeyPair:
    """The plugin author's key pair."""
    return keygen(tmp_path / "author.pem", capsys)


@pytest.fixture
def stranger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> KeyPair:
    """A key pair the host does not trust."""
    return keygen(tmp_path / "stranger.pem", capsys)


@pytest.fixture
def impostor(compile_plugin: CompilePlugin) -> Path:
    """The test plugin built to tell itself apart: executor.identifier says "impostor"."""
    return compile_plugin(TP_WITH_SHUTDOWN=True, TP_NAME="impostor")


def flip_byte(path: Path, offset: int = -1) -> None:
    """Change one byte of a file in place (the last by default, past anything loaded)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
