"""Building the native line core (linecore.c) on first use, cached by its source hash, and
binding its functions.

Built by the host, once per source and compiler, before it starts its first worker; every
worker then loads the same library. Without a C compiler the host logs one WARNING naming
what is missing, and workers serve calls in Python (slower, the same behaviour).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ...abi import ffi
from ...cache import cache_dir

log = logging.getLogger(__name__)

SOURCE: Final = Path(__file__).with_name("linecore.c")
_FLAGS: Final = ("-O2", "-shared", "-fPIC", "-pthread", "-std=c11")
_COMPILE_TIMEOUT_S: Final = 120.0

_lock = threading.Lock()
_built: dict[tuple[str, Path], Path | None] = {}


def compiler() -> list[str]:
    """The C compiler's command: $CC, or cc."""
    return shlex.split(os.environ.get("CC") or "cc")


def line_core() -> Path | None:
    """The built line core, compiled now if this source and compiler have none yet; None
    (after one WARNING saying what is missing) when it cannot be built."""
    command = compiler()
    directory = cache_dir()
    key = (shlex.join(command), directory)
    with _lock:
        if key not in _built:
            _built[key] = _build(command, directory)
        return _built[key]


def _build(command: list[str], directory: Path) -> Path | None:
    fallback = "isolated workers serve calls in Python, which is slower"
    if not command or shutil.which(command[0]) is None:
        log.warning(
            "no C compiler (%s) to build the isolated worker's native line core %s; %s. "
            "Install one (e.g. gcc) or point CC at it",
            command[0] if command else "$CC is empty",
            SOURCE.name,
            fallback,
        )
        return None
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(shlex.join(command).encode())
    target = directory / f"linecore-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Built beside the target and renamed: a host starting at the same time sees a
        # whole library or none.
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".linecore-", suffix=".so")
        os.close(fd)
        try:
            done = subprocess.run(
                [*command, *_FLAGS, "-o", partial, str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=_COMPILE_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                log.warning(
                    "%s could not build the isolated worker's native line core %s (exit %d): "
                    "%s; %s",
                    command[0],
                    SOURCE,
                    done.returncode,
                    " ".join(done.stderr.split())[:500],
                    fallback,
                )
                return None
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning(
            "cannot build the isolated worker's native line core %s into %s: %s; %s",
            SOURCE.name,
            directory,
            exc,
            fallback,
        )
        return None
    return target


def bind(path: Path, signatures: Mapping[str, str]) -> tuple[ctypes.CDLL, dict[str, Any]]:
    """The core's library and its functions named in `signatures`, cast to them over the
    ABI's ffi (by address: an ffi.cdef would bring the C parser back into every start).
    OSError when the library cannot be loaded or lacks one (an older or foreign one under
    the core's name). Keep the library referenced while the functions are used."""
    library = ctypes.CDLL(str(path))
    try:
        addresses = {name: ctypes.cast(library[name], ctypes.c_void_p).value for name in signatures}
    except AttributeError as exc:
        raise OSError(f"{path}: {exc}") from None
    return library, {name: ffi.cast(signatures[name], addresses[name]) for name in signatures}
