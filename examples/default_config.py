"""Write a config enabling the example plugins, unless the file already exists.

Usage: python examples/default_config.py [config.yaml]
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

DEFAULT = """\
# cliproxy-host config, written by `make run`. Edit freely: the host keeps your comments.
plugins:
  enabled: true          # master switch: no plugin loads while this is false
  dir: plugins           # searched as plugins/<os>/<arch>-<variant>, plugins/<os>/<arch>, plugins
  configs:
    simple-rust:
      enabled: true
      priority: 20       # higher runs first
      mode: upper        # upper | lower
    simple-c:
      enabled: true
      priority: 10
      mode: safe         # safe | fast
    http-c:
      enabled: true
      priority: 5
      base_url: http://127.0.0.1:8317/openapi.json   # any URL the http policy allows
    echo-c:
      enabled: true      # a model executor: the model echo-1 on /v1/chat/completions
http:
  timeout-seconds: 30
  max-response-bytes: 16777216
  allowed-hosts: ["127.0.0.1", "localhost"]
# Client keys for /v1 (the OpenAI-compatible endpoints); this one was made for you.
api-keys: ["{client_key}"]
"""


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "config.yaml")
    if path.exists():
        print(f"keeping existing {path}")
        return
    path.write_text(DEFAULT.format(client_key=secrets.token_urlsafe(24)), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
