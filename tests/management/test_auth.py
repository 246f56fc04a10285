"""Tests for the management key checks, the failure limiter and the ManagementAuth dependency."""

from __future__ import annotations

import asyncio
import logging
import socket
import string
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import bcrypt
import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request

from cliproxy_host.management import auth as auth_module
from cliproxy_host.management.auth import (
    ENV_KEY,
    FailureLimiter,
    KeyChecker,
    ManagementAuth,
    generate_key,
    hash_key,
    is_hashed,
    is_loopback,
    key_from_env,
    presented_key,
    protect_secret,
)
from cliproxy_host.management.errors import ApiError, api_error_handler

SECRET = "s3cret-management-key-for-tests"
ENV_SECRET = "env-management-key-for-tests"
WRONG = "not-the-management-key"


def fast_hash(key: str, prefix: str = "$2b$") -> str:
    """A bcrypt hash at the lowest cost, so tests stay fast; prefix picks the variant."""
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=4)).decode()
    return prefix + hashed[4:]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingCheckpw:
    """Stands in for bcrypt.checkpw and counts the calls, so caching is tested without timing."""

    def __init__(self, answer: bool | None = None) -> None:
        self.calls = 0
        self.threads: list[threading.Thread] = []
        self._answer = answer
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls += 1
        self.threads.append(threading.current_thread())
        return self._real(password, hashed) if self._answer is None else self._answer


@pytest.fixture
def checkpw(monkeypatch: pytest.MonkeyPatch) -> CountingCheckpw:
    counter = CountingCheckpw()
    monkeypatch.setattr(bcrypt, "checkpw", counter)
    return counter


# --- keys and hashes -------------------------------------------------------------------


def test_generated_keys_are_url_safe_random_and_long() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    allowed = set(string.ascii_letters + string.digits + "-_")
    for key in keys:
        # 32 random bytes in unpadded base64 are 43 characters.
        assert len(key) >= 43
        assert set(key) <= allowed


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_bcrypt_hashes_of_every_variant_are_recognised(prefix: str) -> None:
    assert is_hashed(fast_hash(SECRET, prefix))


@pytest.mark.parametrize(
    "value",
    [
        "",
        SECRET,
        "$2b$",
        "$2x$04$" + "a" * 53,
        "$2b$03$" + "a" * 53,
        "$2b$04$" + "a" * 52,
        "$2b$04$" + "a" * 54,
        "$2b$04$" + "!" * 53,
    ],
)
def test_plaintext_and_malformed_hashes_are_not_hashed(value: str) -> None:
    assert not is_hashed(value)


def test_hash_key_makes_a_bcrypt_hash_that_verifies() -> None:
    hashed = hash_key(SECRET)
    assert is_hashed(hashed)
    assert SECRET not in hashed
    assert bcrypt.checkpw(SECRET.encode(), hashed.encode())


def test_hash_key_refuses_empty_and_overlong_keys_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_key("")
    overlong = "k" * 73
    with pytest.raises(ValueError, match="at most 72") as info:
        hash_key(overlong)
    assert overlong not in str(info.value)


def test_protect_secret_hashes_plaintext_and_keeps_hashes_and_empty() -> None:
    protected = protect_secret(SECRET)
    assert is_hashed(protected)
    assert KeyChecker(protected).verify(SECRET)
    already = fast_hash(SECRET)
    assert protect_secret(already) == already
    assert protect_secret("") == ""


def test_key_from_env_reads_the_variable_and_treats_empty_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_KEY, ENV_SECRET)
    assert key_from_env() == ENV_SECRET
    monkeypatch.setenv(ENV_KEY, "")
    assert key_from_env() is None
    monkeypatch.delenv(ENV_KEY)
    assert key_from_env() is None


# --- KeyChecker ------------------------------------------------------------------------


def test_plaintext_secret_accepts_only_itself() -> None:
    checker = KeyChecker(SECRET)
    assert checker.verify(SECRET)
    assert not checker.verify(WRONG)
    assert not checker.verify(SECRET + "x")
    assert not checker.verify(SECRET[:-1])


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_hashed_secret_accepts_only_its_key(prefix: str) -> None:
    checker = KeyChecker(fast_hash(SECRET, prefix))
    assert checker.verify(SECRET)
    assert not checker.verify(WRONG)


def test_env_key_and_generated_key_are_accepted_alongside_the_secret() -> None:
    generated = generate_key()
    checker = KeyChecker(fast_hash(SECRET), ENV_SECRET, generated=generated)
    assert checker.verify(SECRET)
    assert checker.verify(ENV_SECRET)
    assert checker.verify(generated)
    assert not checker.verify(WRONG)


def test_env_key_alone_configures_the_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, ENV_SECRET)
    checker = KeyChecker(None, key_from_env())
    assert checker.configured
    assert checker.verify(ENV_SECRET)
    assert not checker.verify(SECRET)


def test_generated_key_alone_configures_the_checker() -> None:
    generated = generate_key()
    checker = KeyChecker(None, None, generated=generated)
    assert checker.configured
    assert checker.verify(generated)


@pytest.mark.parametrize(
    ("secret", "env_key", "generated", "configured"),
    [
        (None, None, None, False),
        ("", "", "", False),
        (SECRET, None, None, True),
        (None, ENV_SECRET, None, True),
        (None, None, "generated-key", True),
    ],
)
def test_configured_says_whether_any_key_exists(
    secret: str | None, env_key: str | None, generated: str | None, configured: bool
) -> None:
    assert KeyChecker(secret, env_key, generated=generated).configured is configured


def test_unconfigured_checker_accepts_nothing() -> None:
    checker = KeyChecker(None)
    assert not checker.verify("")
    assert not checker.verify(WRONG)


def test_second_check_of_a_correct_key_skips_bcrypt(checkpw: CountingCheckpw) -> None:
    checker = KeyChecker(fast_hash(SECRET))
    assert checker.verify_fast(SECRET) is None
    assert checker.verify(SECRET)
    assert checkpw.calls == 1
    assert checker.verify_fast(SECRET) is True
    for _ in range(10):
        assert checker.verify(SECRET)
    assert checkpw.calls == 1


def test_wrong_key_is_never_cached(checkpw: CountingCheckpw) -> None:
    checker = KeyChecker(fast_hash(SECRET))
    assert not checker.verify(WRONG)
    assert not checker.verify(WRONG)
    assert checkpw.calls == 2
    assert checker.verify(SECRET)
    assert not checker.verify(WRONG)
    assert checkpw.calls == 4
    assert checker.verify_fast(WRONG) is None


def test_plaintext_keys_need_no_bcrypt(checkpw: CountingCheckpw) -> None:
    checker = KeyChecker(SECRET, ENV_SECRET)
    assert checker.verify_fast(SECRET) is True
    assert checker.verify_fast(WRONG) is False
    assert checker.verify(ENV_SECRET)
    assert not checker.verify(WRONG)
    assert checkpw.calls == 0


def test_cache_is_bounded_and_forgets_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A checkpw that accepts everything lets many distinct keys pass the hash.
    accept_all = CountingCheckpw(answer=True)
    monkeypatch.setattr(bcrypt, "checkpw", accept_all)
    checker = KeyChecker(fast_hash(SECRET))
    keys = [f"key-{i}" for i in range(200)]
    for key in keys:
        assert checker.verify(key)
    assert accept_all.calls == 200
    assert checker.verify_fast(keys[-1]) is True
    assert checker.verify_fast(keys[0]) is None


def test_overlong_key_against_a_hash_is_refused_without_error() -> None:
    checker = KeyChecker(fast_hash(SECRET))
    assert not checker.verify("k" * 100)


def test_repr_shows_no_key() -> None:
    hashed = fast_hash(SECRET)
    text = repr(KeyChecker(hashed, ENV_SECRET, generated="generated-key"))
    for secret in (hashed, SECRET, ENV_SECRET, "generated-key"):
        assert secret not in text


# --- FailureLimiter --------------------------------------------------------------------


def test_client_is_locked_out_after_n_failures() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=5, clock=clock)
    for _ in range(4):
        assert limiter.failure("a") is None
        assert limiter.check("a") is None
    assert limiter.failure("a") == 1.0
    assert limiter.check("a") == pytest.approx(1.0)
    assert limiter.check("b") is None
    clock.advance(0.4)
    assert limiter.check("a") == pytest.approx(0.6)
    clock.advance(0.6)
    assert limiter.check("a") is None


def test_lockout_doubles_with_each_further_failure_up_to_the_cap() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, clock=clock)
    limiter.failure("a")
    delays = []
    for _ in range(12):
        delay = limiter.failure("a")
        assert delay is not None
        delays.append(delay)
        assert limiter.check("a") == pytest.approx(delay)
        clock.advance(delay)
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_doubling_stays_finite_after_very_many_failures() -> None:
    limiter = FailureLimiter(max_failures=1, clock=FakeClock())
    for _ in range(2000):
        delay = limiter.failure("a")
    assert delay == 300.0


def test_failures_spread_beyond_the_window_never_lock_out() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock)
    for _ in range(10):
        assert limiter.failure("a") is None
        clock.advance(31.0)
    assert limiter.check("a") is None


def test_quiet_window_after_a_lockout_forgives_the_client() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=2, window=60.0, clock=clock)
    limiter.failure("a")
    assert limiter.failure("a") == 1.0
    clock.advance(1.0 + 59.0)
    assert limiter.failure("a") == 2.0
    clock.advance(2.0 + 61.0)
    assert limiter.failure("a") is None
    assert limiter.failure("a") == 1.0


def test_success_resets_the_client() -> None:
    limiter = FailureLimiter(max_failures=2, clock=FakeClock())
    limiter.failure("a")
    limiter.failure("a")
    assert limiter.check("a") is not None
    limiter.success("a")
    assert limiter.check("a") is None
    assert limiter.failure("a") is None
    assert len(limiter) == 1


def test_stale_clients_are_pruned() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=5, window=60.0, clock=clock)
    for i in range(100):
        limiter.failure(f"10.0.0.{i}")
    assert len(limiter) == 100
    clock.advance(61.0)
    limiter.failure("fresh")
    assert len(limiter) == 1


def test_locked_out_clients_are_kept_until_their_lockout_and_window_pass() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=1, window=60.0, clock=clock)
    assert limiter.failure("attacker") == 1.0
    assert limiter.failure("attacker") == 2.0
    clock.advance(61.0)
    limiter.failure("other")
    assert len(limiter) == 2
    clock.advance(1.5)
    limiter.failure("other")
    assert len(limiter) == 1


def test_tracked_clients_are_bounded() -> None:
    limiter = FailureLimiter(max_clients=10, clock=FakeClock())
    for i in range(1000):
        limiter.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 10


def test_limiter_counts_every_failure_under_concurrency() -> None:
    threads_n, per_thread = 8, 250
    limiter = FailureLimiter(max_failures=threads_n * per_thread, clock=FakeClock())

    def fail() -> None:
        for _ in range(per_thread):
            limiter.failure("a")

    threads = [threading.Thread(target=fail) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiter.check("a") is not None


def test_limiter_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FailureLimiter(max_failures=0)
    with pytest.raises(ValueError, match="at least 1"):
        FailureLimiter(max_clients=0)


# --- client addresses and headers ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:127.8.9.10", True),
        ("testclient", False),
        ("localhost", False),
        (None, False),
        ("", False),
        ("10.0.0.1", False),
        ("192.0.2.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": f"Bearer {SECRET}"}, SECRET),
        ({"Authorization": f"bearer   {SECRET} "}, SECRET),
        ({"X-Management-Key": SECRET}, SECRET),
        ({"x-management-key": f" {SECRET} "}, SECRET),
        ({"Authorization": f"Bearer {SECRET}", "X-Management-Key": WRONG}, SECRET),
        ({"Authorization": "Basic dXNlcjpwYXNz", "X-Management-Key": SECRET}, SECRET),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer   "}, None),
        ({"X-Management-Key": ""}, None),
        ({}, None),
    ],
)
def test_presented_key_comes_from_bearer_or_x_management_key(
    headers: dict[str, str], expected: str | None
) -> None:
    assert presented_key(Headers(headers)) == expected


# --- ManagementAuth on constructed requests --------------------------------------------


def make_request(client: tuple[str, int] | None, headers: Mapping[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v0/management/plugins",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": client,
    }
    return Request(scope)


def admit(auth: ManagementAuth, request: Request) -> ApiError | None:
    """Run the dependency; the ApiError it raised, or None when it let the request through."""
    try:
        asyncio.run(auth(request))
    except ApiError as exc:
        return exc
    return None


def test_remote_client_is_refused_even_with_the_right_key() -> None:
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=False)
    error = admit(auth, make_request(("203.0.113.7", 40000), {"X-Management-Key": SECRET}))
    assert error is not None
    assert (error.status, error.code) == (403, "remote_management_disabled")
    assert "remote-management.allow-remote: true" in error.message


@pytest.mark.parametrize("client", [("testclient", 50000), None])
def test_clients_without_a_loopback_address_are_remote(client: tuple[str, int] | None) -> None:
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=False)
    error = admit(auth, make_request(client, {"X-Management-Key": SECRET}))
    assert error is not None
    assert error.code == "remote_management_disabled"


def test_remote_client_is_admitted_with_the_right_key_when_allowed() -> None:
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=True)
    remote = ("203.0.113.7", 40000)
    assert admit(auth, make_request(remote, {"Authorization": f"Bearer {SECRET}"})) is None
    error = admit(auth, make_request(remote, {"Authorization": f"Bearer {WRONG}"}))
    assert error is not None
    assert error.code == "invalid_management_key"


def test_ipv6_and_mapped_loopback_clients_are_local() -> None:
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=False)
    for host in ("::1", "::ffff:127.0.0.1"):
        assert admit(auth, make_request((host, 1), {"X-Management-Key": SECRET})) is None


def test_no_configured_key_refuses_every_request() -> None:
    auth = ManagementAuth(KeyChecker(None), allow_remote=False)
    error = admit(auth, make_request(("127.0.0.1", 1), {"X-Management-Key": WRONG}))
    assert error is not None
    assert (error.status, error.code) == (403, "management_key_not_set")
    assert ENV_KEY in error.message


def test_locked_out_client_is_refused_even_with_the_right_key() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=1, clock=clock)
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=False, limiter=limiter)
    local = ("127.0.0.1", 1)
    error = admit(auth, make_request(local, {"X-Management-Key": WRONG}))
    assert error is not None
    assert error.code == "invalid_management_key"
    error = admit(auth, make_request(local, {"X-Management-Key": SECRET}))
    assert error is not None
    assert (error.status, error.code) == (429, "too_many_attempts")
    assert error.headers["Retry-After"] == "1"
    clock.advance(1.0)
    assert admit(auth, make_request(local, {"X-Management-Key": SECRET})) is None
    assert len(limiter) == 0


def test_first_bcrypt_check_runs_off_the_event_loop_thread(checkpw: CountingCheckpw) -> None:
    auth = ManagementAuth(KeyChecker(fast_hash(SECRET)), allow_remote=False)
    request = make_request(("127.0.0.1", 1), {"X-Management-Key": SECRET})
    assert admit(auth, request) is None
    assert admit(auth, request) is None
    assert checkpw.calls == 1
    assert checkpw.threads[0] is not threading.current_thread()


# --- ManagementAuth in a real server ---------------------------------------------------


def make_app(auth: ManagementAuth) -> FastAPI:
    app = FastAPI()
    app.add_exception_handler(ApiError, api_error_handler)

    @app.get("/v0/management/ping", dependencies=[Depends(auth)])
    def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    """Run app with uvicorn on 127.0.0.1 in a background thread; a client bound to it."""
    # Binding the socket here, not in uvicorn, means the free port cannot be taken between
    # picking it and listening on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    # log_config=None keeps uvicorn from reconfiguring logging under caplog.
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10.0)
        sock.close()


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert body["message"]


def test_server_accepts_bearer_and_x_management_key() -> None:
    auth = ManagementAuth(KeyChecker(fast_hash(SECRET), ENV_SECRET), allow_remote=False)
    with serve(make_app(auth)) as client:
        for headers in (
            {"Authorization": f"Bearer {SECRET}"},
            {"X-Management-Key": SECRET},
            {"Authorization": f"Bearer {ENV_SECRET}"},
            {"X-Management-Key": ENV_SECRET},
        ):
            response = client.get("/v0/management/ping", headers=headers)
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}


def test_server_answers_missing_and_wrong_keys_with_401() -> None:
    auth = ManagementAuth(KeyChecker(fast_hash(SECRET)), allow_remote=False)
    with serve(make_app(auth)) as client:
        missing = client.get("/v0/management/ping")
        assert_error(missing, 401, "missing_management_key")
        assert "Authorization: Bearer" in missing.json()["message"]
        assert "X-Management-Key" in missing.json()["message"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.get("/v0/management/ping", headers={"X-Management-Key": WRONG})
        assert_error(wrong, 401, "invalid_management_key")
        wrong = client.get("/v0/management/ping", headers={"Authorization": f"Bearer {WRONG}"})
        assert_error(wrong, 401, "invalid_management_key")


def test_server_locks_out_after_repeated_failures_with_retry_after() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=3, clock=clock)
    auth = ManagementAuth(KeyChecker(SECRET), allow_remote=False, limiter=limiter)
    with serve(make_app(auth)) as client:
        for _ in range(3):
            wrong = client.get("/v0/management/ping", headers={"X-Management-Key": WRONG})
            assert_error(wrong, 401, "invalid_management_key")
        locked = client.get("/v0/management/ping", headers={"X-Management-Key": SECRET})
        assert_error(locked, 429, "too_many_attempts")
        assert locked.headers["Retry-After"] == "1"
        clock.advance(1.0)
        # The next failure doubles the lockout; Retry-After rounds the rest up.
        wrong = client.get("/v0/management/ping", headers={"X-Management-Key": WRONG})
        assert_error(wrong, 401, "invalid_management_key")
        clock.advance(0.5)
        locked = client.get("/v0/management/ping", headers={"X-Management-Key": SECRET})
        assert_error(locked, 429, "too_many_attempts")
        assert locked.headers["Retry-After"] == "2"
        clock.advance(1.5)
        ok = client.get("/v0/management/ping", headers={"X-Management-Key": SECRET})
        assert ok.status_code == 200


def test_no_key_or_secret_reaches_bodies_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hashed = fast_hash(SECRET)
    limiter = FailureLimiter(max_failures=2, clock=FakeClock())
    auth = ManagementAuth(KeyChecker(hashed, ENV_SECRET), allow_remote=False, limiter=limiter)
    sensitive = (SECRET, ENV_SECRET, WRONG, hashed)
    bodies: list[str] = []
    with serve(make_app(auth)) as client:
        for headers in (
            {},
            {"Authorization": f"Bearer {WRONG}"},
            {"X-Management-Key": WRONG},
            {"X-Management-Key": SECRET},
            {"Authorization": f"Bearer {ENV_SECRET}"},
        ):
            response = client.get("/v0/management/ping", headers=headers)
            bodies.append(response.text)
            bodies.append(str(response.headers))
    assert any('"too_many_attempts"' in body for body in bodies)
    logged = [caplog.text, *(record.getMessage() for record in caplog.records)]
    for text in bodies + logged:
        for secret in sensitive:
            assert secret not in text
    warnings = [
        record
        for record in caplog.records
        if record.name == auth_module.__name__ and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 3
    assert all("127.0.0.1" in record.getMessage() for record in warnings)
    assert "locked out" in warnings[-1].getMessage()
