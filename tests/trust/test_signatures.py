"""ed25519 signatures: `<file>.sig` checked against plugins.trusted-keys, require-signature,
and `cliproxy-host keygen` / `sign` for authors."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from cliproxy_host import errors
from cliproxy_host.cli import main
from cliproxy_host.config import HostConfig
from cliproxy_host.errors import ConfigError
from cliproxy_host.host.facade import PluginHost
from cliproxy_host.trust import TrustPolicy, verify_file, verify_plugin

from ..conftest import HostFactory
from .conftest import KeyPair, flip_byte


def sign(path: Path, key: KeyPair) -> Path:
    """`cliproxy-host sign`: writes the file's .sig."""
    assert main(["sign", str(path), "--key", str(key.private)]) == 0
    signature = Path(f"{path}.sig")
    assert signature.is_file()
    return signature


def write(host_factory: HostFactory, isolation: str, *keys: KeyPair, require: bool = False) -> None:
    """The config: plugin tp enabled, these keys trusted."""
    doc = {
        "plugins": {
            "enabled": True,
            "dir": "plugins",
            "trusted-keys": [key.public for key in keys],
            "require-signature": require,
            "configs": {"tp": {"enabled": True, "isolation": isolation}},
        }
    }
    with host_factory.config_path.open("w", encoding="utf-8") as fh:
        YAML().dump(doc, fh)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    author: KeyPair, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stat.S_IMODE(author.private.stat().st_mode) == 0o600
    assert author.private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert len(base64.b64decode(author.public)) == 32
    before = author.private.read_bytes()
    assert main(["keygen", "--out", str(author.private)]) == 2
    assert "exists" in capsys.readouterr().err
    assert author.private.read_bytes() == before


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_a_file_signed_by_a_trusted_key_loads_under_require_signature(
    testplugin: Path,
    host_factory: HostFactory,
    author: KeyPair,
    isolation: str,
) -> None:
    installed = host_factory.add("tp", testplugin)
    sign(installed, author)
    write(host_factory, isolation, author, require=True)
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert (info.registered, info.error) == (True, None)
        assert info.signed_by == author.public
        assert info.sha256 == hashlib.sha256(installed.read_bytes()).hexdigest()
        assert host.call("tp", "echo", {"signed": True}) == {"signed": True}


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_a_signature_by_a_key_the_host_does_not_trust_is_refused(
    testplugin: Path,
    host_factory: HostFactory,
    author: KeyPair,
    stranger: KeyPair,
    isolation: str,
) -> None:
    installed = host_factory.add("tp", testplugin)
    sign(installed, stranger)
    write(host_factory, isolation, author)
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert not info.registered
        assert info.error is not None
        assert errors.SignatureInvalid.code in info.error
        assert f"{installed}.sig is not a signature of {installed}" in info.error
        with pytest.raises(errors.PluginNotLoaded):
            host.call("tp", "echo", {})


def test_a_byte_flipped_after_signing_breaks_the_signature(
    testplugin: Path, host_factory: HostFactory, author: KeyPair
) -> None:
    installed = host_factory.add("tp", testplugin)
    sign(installed, author)
    flip_byte(installed)
    write(host_factory, "inprocess", author)
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert not info.registered
        assert info.error is not None
        assert errors.SignatureInvalid.code in info.error


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
def test_an_unsigned_file_is_refused_under_require_signature(
    testplugin: Path, host_factory: HostFactory, author: KeyPair, isolation: str
) -> None:
    installed = host_factory.add("tp", testplugin)
    write(host_factory, isolation, author, require=True)
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert not info.registered
        assert info.error is not None
        assert errors.SignatureMissing.code in info.error
        assert f"{installed} has no signature (tp.so.sig)" in info.error


def test_an_unsigned_file_loads_when_signatures_are_not_required(
    testplugin: Path, host_factory: HostFactory, author: KeyPair
) -> None:
    host_factory.add("tp", testplugin)
    write(host_factory, "inprocess", author)
    with PluginHost.from_config(host_factory.config_path) as host:
        assert host.call("tp", "echo", {}) == {}


def test_a_sig_file_that_is_no_signature_is_refused(
    testplugin: Path, host_factory: HostFactory, author: KeyPair
) -> None:
    installed = host_factory.add("tp", testplugin)
    Path(f"{installed}.sig").write_text("not base64 at all\n")
    write(host_factory, "inprocess", author)
    with PluginHost.from_config(host_factory.config_path) as host:
        [info] = host.plugins()
        assert info.error is not None
        assert "is no ed25519 signature" in info.error


def test_verify_tells_which_trusted_key_signed_the_bytes(
    testplugin: Path,
    tmp_path: Path,
    author: KeyPair,
    stranger: KeyPair,
) -> None:
    path = tmp_path / "tp.so"
    shutil.copyfile(testplugin, path)
    sign(path, author)
    policy = TrustPolicy(trusted_keys=(stranger.public, author.public))
    data, verdict = verify_file(path, policy, plugin_id="tp")
    assert (verdict.signed, verdict.signer) == (True, author.public)
    # The signature covers the bytes handed in, whatever the file holds now.
    with pytest.raises(errors.SignatureInvalid):
        verify_plugin(data + b"\0", path, policy, plugin_id="tp")
    # A signature handed in (an upload's) instead of the file beside the path.
    given = verify_plugin(
        data, tmp_path / "upload.so", policy, signature=Path(f"{path}.sig").read_bytes()
    )
    assert given.signer == author.public
    with pytest.raises(errors.SignatureInvalid, match=r"upload\.so\.sig is no ed25519"):
        verify_plugin(data, tmp_path / "upload.so", policy, signature=b"short")
    unsigned = verify_plugin(data, tmp_path / "elsewhere.so", policy)
    assert (unsigned.signed, unsigned.sha256) == (False, verdict.sha256)
    assert issubclass(errors.SignatureInvalid, errors.PluginUntrusted)


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        ({"trusted-keys": ["c2hvcnQ="]}, r"plugins\.trusted-keys\[0\]: expected an ed25519"),
        ({"require-signature": True}, "require-signature is true but trusted-keys is empty"),
    ],
)
def test_bad_trust_settings_are_config_errors(plugins: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HostConfig.from_mapping({"plugins": plugins})
