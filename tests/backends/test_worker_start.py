"""An isolated worker starts without importing what it does not use (a restart pays for it)."""

from __future__ import annotations

import subprocess
import sys

from cliproxy_host import abi


def test_the_worker_imports_neither_the_c_parser_nor_the_trust_package() -> None:
    # This process built the ABI's cached module (importing abi); the worker inherits
    # the same cache directory and loads it.
    assert abi.ffi is not None
    unwanted = ("pycparser", "cffi", "cliproxy_host.trust", "importlib.resources")
    code = (
        "import sys, cliproxy_host.backends.isolated.worker; "
        f"print(sorted(m for m in {unwanted!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
