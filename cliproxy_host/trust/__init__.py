"""Whether a plugin file may be loaded: its sha256 pin and its ed25519 signature.

`verify_plugin` is the one entry point: given a file's bytes (read once, and the very
bytes that are then loaded) and the plugin's `TrustPolicy`, it refuses a pin mismatch,
a bad signature or a missing one the policy requires, and says which key signed it.
"""

from .digest import read_image, sha256_hex
from .policy import TrustPolicy, Verdict, verify_file, verify_plugin

__all__ = ["TrustPolicy", "Verdict", "read_image", "sha256_hex", "verify_file", "verify_plugin"]
