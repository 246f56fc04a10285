"""Tests of plugin trust: sha256 pins, ed25519 signatures, loading the verified bytes."""
