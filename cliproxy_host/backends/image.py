"""A verified library image in memory, given a path dlopen can open (memfd on Linux).

The host checks a plugin's pin and signature on bytes it read once; loading the file again
by its name would open whatever is on disk by then. The image is a sealed memfd (no one,
this process included, can change it) and dlopen opens it as /proc/self/fd/N.
"""

from __future__ import annotations

import _ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Final

_MEMFD: Final = sys.platform.startswith("linux") and hasattr(os, "memfd_create")
if sys.platform.startswith("linux"):
    import fcntl

    # No more writes, no resizing, and no unsealing.
    _SEALS: Final = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

# The fds of images whose library stayed loaded after dlclose (a Go runtime, thread-local
# destructors): glibc knows a loaded library by the name it was opened with, so the fd
# number in that name must never be reused for another image. Kept open for good.
_kept: list[int] = []


class LibraryImage:
    """The bytes of one library, at a path of their own until `release`."""

    def __init__(self, data: bytes, name: str) -> None:
        self._fd: int | None = None
        self._dir: str | None = None
        if _MEMFD:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                _write_all(fd, data)
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self.path = Path(f"/proc/self/fd/{fd}")
        else:
            # No memfd: a file of our own in a private directory (0700), removed at release.
            self._dir = tempfile.mkdtemp(prefix="cliproxy-image-")
            self.path = Path(self._dir) / name
            with self.path.open("xb") as fh:
                fh.write(data)

    def release(self, still_loaded: bool) -> None:
        """Give the path up once the library is closed; `still_loaded` keeps its name taken."""
        if self._fd is not None:
            if still_loaded:
                _kept.append(self._fd)
            else:
                os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def is_loaded(path: Path) -> bool:
    """Whether the dynamic loader still holds a library opened by this name."""
    flags = getattr(os, "RTLD_NOLOAD", 0)
    if not flags:
        return False
    # ctypes, not cffi: a NOLOAD miss sets no dlerror(), which cffi's dlopen cannot take.
    try:
        handle = _ctypes.dlopen(str(path), os.RTLD_NOW | os.RTLD_LOCAL | flags)
    except OSError:
        return False
    _ctypes.dlclose(handle)
    return True
