"""host.auth.* called by real C and Rust plugins, in-process and isolated: the Go host's
entries and index, save's refusals (nothing written), broken files, links, concurrent saves."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cliproxy_host import PluginHost
from cliproxy_host.callbacks.auth import auth_index, go_time
from cliproxy_host.config import HostConfig
from cliproxy_host.errors import InvalidRequest, PluginError, UnknownAuth
from tests.conftest import CompilePlugin, HostFactory, build_rust_plugin

MAX_BYTES = 4096  # remote-management.max-body-bytes in these tests: the auth file cap

Auth = Callable[[str, dict[str, Any]], Any]


@pytest.fixture(scope="session")
def auth_rust() -> Path:
    return build_rust_plugin("auth-rust")


@pytest.fixture(
    params=[("c", "inprocess"), ("c", "process"), ("rust", "inprocess"), ("rust", "process")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def auth(
    request: pytest.FixtureRequest,
    compile_plugin: CompilePlugin,
    host_factory: HostFactory,
) -> Iterator[Auth]:
    """`auth("save", {...})`: the plugin calls host.auth.save and answers what it got."""
    lang, isolation = request.param
    if lang == "c":
        # testplugin's `host` method calls host->call(method, request) and answers verbatim.
        host_factory.add("p", compile_plugin(TP_WITH_SHUTDOWN=True))
    else:
        host_factory.add("p", request.getfixturevalue("auth_rust"))
    host_factory.write_config(
        {"p": {"enabled": True, "isolation": isolation}},
        extra={"auth-dir": "auths", "remote-management": {"max-body-bytes": MAX_BYTES}},
    )
    host = PluginHost.from_config(host_factory.config_path)
    info = host.plugin("p")
    assert info is not None
    assert info.registered, info.error

    def call(method: str, body: dict[str, Any]) -> Any:
        if lang == "c":
            return host.call("p", "host", {"method": f"host.auth.{method}", "request": body})
        return host.call("p", f"auth.{method}", body)

    try:
        yield call
    finally:
        host.close()


def auth_dir(host_factory: HostFactory) -> Path:
    return host_factory.root / "auths"


# -- the four methods ----------------------------------------------------------------


def test_save_writes_0600_in_a_0700_dir_and_answers_name_and_path(
    auth: Auth, host_factory: HostFactory
) -> None:
    doc = {"type": "Claude", "email": " me@example.com ", "priority": "3", "note": " hi "}
    answer = auth("save", {"name": " me.json ", "json": doc})
    path = auth_dir(host_factory) / "me.json"
    assert answer == {"name": "me.json", "path": str(path)}
    assert orjson.loads(path.read_bytes()) == doc
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["me.json"]  # no temp file left


def test_list_get_and_get_runtime_answer_the_go_hosts_fields(
    auth: Auth, host_factory: HostFactory
) -> None:
    doc = {"type": "Claude", "email": " me@example.com ", "priority": "3", "note": " hi ",
           "websockets": "true", "project_id": "p1"}  # fmt: skip
    auth("save", {"name": "b.json", "json": doc})
    auth("save", {"name": "A.json", "json": {"type": "codex", "disabled": True}})
    auth("save", {"name": "c.json", "json": {"type": "gemini"}})
    files = auth("list", {})["files"]
    assert [f["name"] for f in files] == ["A.json", "b.json", "c.json"]
    path = auth_dir(host_factory) / "b.json"
    mtime = go_time(path.stat().st_mtime_ns)
    # sdk/cliproxy/auth/types.go indexSeed: lower(type) + ":" + absolute path.
    index = hashlib.sha256(f"claude:{path}".encode()).hexdigest()[:16]
    entry = files[1]
    assert entry == {
        "id": "b.json",
        "auth_index": index,
        "name": "b.json",
        "type": "claude",
        "provider": "claude",
        "label": "me@example.com",
        "status": "active",
        "source": "file",
        "path": str(path),
        "size": path.stat().st_size,
        "modtime": mtime,
        "updated_at": mtime,
        "created_at": mtime,
        "last_refresh": "0001-01-01T00:00:00Z",
        "next_retry_after": "0001-01-01T00:00:00Z",
        "email": "me@example.com",
        "project_id": "p1",
        "priority": 3,
        "note": "hi",
        "websockets": True,
    }
    assert files[0]["status"] == "disabled"
    assert files[0]["disabled"] is True
    # The Go host's loader names gemini files gemini-cli; the index keeps the file's type.
    gemini = auth_dir(host_factory) / "c.json"
    assert files[2]["provider"] == "gemini-cli"
    assert files[2]["auth_index"] == auth_index(f"gemini:{gemini}")

    assert auth("get", {"auth_index": index}) == {
        "auth_index": index,
        "name": "b.json",
        "path": str(path),
        "json": doc,
    }
    assert auth("get_runtime", {"auth_index": f" {index} "}) == {"auth": entry}


def test_the_index_is_the_first_8_bytes_of_sha256_of_the_seed() -> None:
    # printf 'claude:/srv/auths/me.json' | sha256sum | cut -c1-16
    assert auth_index("claude:/srv/auths/me.json") == "ce877b3cc76a33e2"


def test_go_time_is_rfc3339_utc_with_trailing_zeros_cut() -> None:
    assert go_time(0) == "1970-01-01T00:00:00Z"
    assert go_time(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert go_time(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"


def test_a_saved_name_is_replaced_and_listed_once(auth: Auth, host_factory: HostFactory) -> None:
    auth("save", {"name": "x.json", "json": {"type": "codex", "v": 1}})
    auth("save", {"name": "x.json", "json": {"type": "codex", "v": 2}})
    files = auth("list", {})["files"]
    assert len(files) == 1
    assert auth("get", {"auth_index": files[0]["auth_index"]})["json"] == {"type": "codex", "v": 2}


def test_list_of_an_auth_dir_not_created_yet_is_empty(auth: Auth) -> None:
    assert auth("list", {}) == {"files": []}


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("../x.json", "path separator"),
        ("a/b.json", "path separator"),
        ("a\\b.json", "path separator"),
        ("C:x.json", "drive letter"),
        ("a..b.json", "'..'"),
        ("a\u0000.json", "NUL"),
        ("x" * 251 + ".json", "over 255"),
        ("x.txt", "does not end with .json"),
        ("x.json.bak", "does not end with .json"),
        (7, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_save_refuses_a_bad_name_and_writes_nothing(
    auth: Auth, host_factory: HostFactory, name: object, says: str
) -> None:
    with pytest.raises(InvalidRequest, match=r"host\.auth\.save") as info:
        auth("save", {"name": name, "json": {"type": "codex"}})
    assert says in str(info.value)
    assert not auth_dir(host_factory).exists()


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ([1], "an array"),
        ("{}", "a string"),
        (None, "null"),
        (3, "a number"),
        ({"pad": "x" * MAX_BYTES}, "over the 4096-byte cap"),
    ],
)
def test_save_refuses_json_that_is_not_a_bounded_object_and_writes_nothing(
    auth: Auth, host_factory: HostFactory, document: object, says: str
) -> None:
    with pytest.raises(InvalidRequest, match="nothing was written") as info:
        auth("save", {"name": "x.json", "json": document})
    assert says in str(info.value)
    assert not auth_dir(host_factory).exists()


def test_save_without_json_is_refused(auth: Auth, host_factory: HostFactory) -> None:
    with pytest.raises(InvalidRequest, match='"json" must be a JSON object'):
        auth("save", {"name": "x.json"})
    assert not auth_dir(host_factory).exists()


@pytest.mark.parametrize("method", ["get", "get_runtime"])
def test_get_needs_a_known_auth_index(auth: Auth, method: str) -> None:
    auth("save", {"name": "x.json", "json": {"type": "codex"}})
    with pytest.raises(InvalidRequest, match='"auth_index" is required'):
        auth(method, {})
    with pytest.raises(InvalidRequest, match='"auth_index" is required'):
        auth(method, {"auth_index": 12})
    with pytest.raises(UnknownAuth, match="auth not found for auth_index 0000000000000000"):
        auth(method, {"auth_index": "0000000000000000"})


# -- reading what others wrote ---------------------------------------------------------


def test_broken_files_are_listed_with_a_status_and_big_files_and_outside_links_skipped(
    auth: Auth, host_factory: HostFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = auth_dir(host_factory)
    root.mkdir(mode=0o700)
    (root / "bad.json").write_bytes(b"{not json")
    (root / "list.json").write_bytes(b"[1, 2]")
    (root / "empty.json").write_bytes(b"")
    (root / "big.json").write_bytes(b'{"pad": "' + b"x" * MAX_BYTES + b'"}')
    (root / "notes.txt").write_bytes(b"{}")
    (root / "sub.json").mkdir()
    os.mkfifo(root / "fifo.json")  # never opened for a blocking read
    secret = tmp_path / "secret.json"
    secret.write_bytes(b'{"type": "codex"}')
    (root / "out.json").symlink_to(secret)
    (root / "ok.json").write_bytes(b'{"type": "codex"}')
    (root / "in.json").symlink_to(root / "ok.json")

    files = {f["name"]: f for f in auth("list", {})["files"]}
    assert sorted(files) == ["bad.json", "empty.json", "in.json", "list.json", "ok.json"]
    assert files["ok.json"]["status"] == "active"
    assert files["in.json"]["status"] == "active"  # a link to a file of the auth dir
    for name, says in [("bad.json", "not JSON"), ("empty.json", "not JSON"),
                       ("list.json", "not a JSON object (got an array)")]:  # fmt: skip
        entry = files[name]
        assert entry["status"] == "error", entry
        assert entry["status_message"].startswith(f"{name}: {says}"), entry
        assert "fix or remove the file" in entry["status_message"]
        with pytest.raises(UnknownAuth, match=f"{name} for auth_index .* cannot be read"):
            auth("get", {"auth_index": entry["auth_index"]})
        assert auth("get_runtime", {"auth_index": entry["auth_index"]})["auth"] == entry
    # The host reads the auth dir itself, for isolated plugins too: its log says why.
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "big.json is" in messages
    assert "over the 4096-byte cap; skipped" in messages
    assert "out.json is a link out of the auth dir; not followed" in messages


# -- concurrency -----------------------------------------------------------------------


def test_eight_threads_saving_and_reading_one_name_never_see_a_torn_file(
    auth: Auth, host_factory: HostFactory
) -> None:
    # Documents of different sizes: a torn or interleaved write would not parse as one.
    docs = [{"type": "codex", "n": n, "pad": "y" * (n * 300)} for n in range(8)]
    auth("save", {"name": "race.json", "json": docs[0]})
    index = auth("list", {})["files"][0]["auth_index"]
    rounds, problems = 12, []
    deadline = time.monotonic() + 60

    def worker(n: int) -> None:
        try:
            for _ in range(rounds):
                if time.monotonic() > deadline:
                    problems.append("deadline")
                    return
                auth("save", {"name": "race.json", "json": docs[n]})
                got = auth("get", {"auth_index": index})["json"]
                if got not in docs:
                    problems.append(f"torn read: {str(got)[:80]}")
                on_disk = orjson.loads((auth_dir(host_factory) / "race.json").read_bytes())
                if on_disk not in docs:
                    problems.append("torn file")
        except Exception as exc:  # reported below, with the thread's number
            problems.append(f"thread {n}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    assert [p.name for p in auth_dir(host_factory).iterdir()] == ["race.json"]
    assert stat.S_IMODE((auth_dir(host_factory) / "race.json").stat().st_mode) == 0o600


# -- the config key ---------------------------------------------------------------------


def test_auth_dir_defaults_to_auths_beside_the_config_file(tmp_path: Path) -> None:
    config_path = tmp_path / "conf" / "config.yaml"
    config_path.parent.mkdir()
    config_path.write_text("plugins: {}\n")
    assert HostConfig.load(config_path).auth_dir_path() == tmp_path / "conf" / "auths"
    config_path.write_text("auth-dir: ../creds\n")
    assert HostConfig.load(config_path).auth_dir_path() == tmp_path / "conf" / "../creds"
    config_path.write_text(f"auth-dir: {tmp_path / 'abs'}\n")
    assert HostConfig.load(config_path).auth_dir_path() == tmp_path / "abs"
    config_path.write_text("auth-dir: ~/x\n")
    assert HostConfig.load(config_path).auth_dir_path() == Path.home() / "x"
    assert "auth-dir" not in (HostConfig.load(config_path).model_extra or {})


def test_a_reload_moves_the_auth_dir_and_the_http_policy_with_it(
    compile_plugin: CompilePlugin, host_factory: HostFactory
) -> None:
    host_factory.add("p", compile_plugin(TP_WITH_SHUTDOWN=True))
    plugins = {"p": {"enabled": True}}
    host_factory.write_config(plugins, extra={"auth-dir": "auths"})
    host = PluginHost.from_config(host_factory.config_path)
    try:

        def host_call(method: str, body: dict[str, Any]) -> Any:
            return host.call("p", "host", {"method": method, "request": body})

        host_call("host.auth.save", {"name": "a.json", "json": {"type": "x"}})
        assert (host_factory.root / "auths" / "a.json").exists()
        # edited in place and applied, as the watcher does: no restart
        host_factory.write_config(
            plugins,
            extra={"auth-dir": "other-auths", "http": {"allowed-hosts": ["other.test"]}},
        )
        host.apply(HostConfig.load(host_factory.config_path))
        host_call("host.auth.save", {"name": "b.json", "json": {"type": "x"}})
        assert (host_factory.root / "other-auths" / "b.json").exists()
        assert not (host_factory.root / "auths" / "b.json").exists()
        assert [f["name"] for f in host_call("host.auth.list", {})["files"]] == ["b.json"]
        with pytest.raises(PluginError) as refused:
            host_call("host.http.do", {"url": "http://127.0.0.1:9/"})
        assert refused.value.code == "host_not_allowed"
    finally:
        host.close()
