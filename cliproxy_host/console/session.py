"""Console sessions: a random token in an HttpOnly cookie, its CSRF token, idle and absolute
expiry; held in memory, so a restart signs everyone out."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..web.keys import digest

__all__ = ["COOKIE", "IDLE_SECONDS", "LIFETIME_SECONDS", "Session", "SessionStore"]

COOKIE: Final = "cliproxy_console"
# An operator who walks away is signed out after half an hour; nobody stays signed in
# for longer than a working day, however busy.
IDLE_SECONDS: Final = 30 * 60
LIFETIME_SECONDS: Final = 12 * 60 * 60
# Sign-ins are rate-limited per address, but many addresses could still fill memory.
MAX_SESSIONS: Final = 1_000


@dataclass(slots=True)
class Session:
    csrf: str  # sent back on every write, in a header (htmx) or a form field
    created: float
    seen: float


class SessionStore:
    """Open, find and close sessions. Only the SHA-256 digest of a cookie's token is kept,
    so what is in memory cannot be replayed as a cookie."""

    def __init__(
        self,
        *,
        idle: float = IDLE_SECONDS,
        lifetime: float = LIFETIME_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._lifetime = lifetime
        self._max = max_sessions
        self._clock = clock
        # Oldest use first, so that the least recently used go when the store is full.
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self) -> tuple[str, Session]:
        """A new session and the token its cookie carries."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._sessions[digest(token)] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of `token`, its idle clock restarted; None when there is none or
        it expired (an expired one is forgotten)."""
        if not token:
            return None
        key = digest(token)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > self._idle or now - session.created > self._lifetime:
                del self._sessions[key]
                return None
            session.seen = now
            self._sessions.move_to_end(key)
            return session

    def alive(self, token: str | None) -> bool:
        """Whether `token`'s session is live, without restarting its idle clock: a tail
        left open must not keep an operator who walked away signed in."""
        if not token:
            return False
        now = self._clock()
        with self._lock:
            session = self._sessions.get(digest(token))
            return session is not None and (
                now - session.seen <= self._idle and now - session.created <= self._lifetime
            )

    def close(self, token: str | None) -> None:
        """Forget `token`'s session (signing out); nothing when there is none."""
        if token:
            with self._lock:
                self._sessions.pop(digest(token), None)
