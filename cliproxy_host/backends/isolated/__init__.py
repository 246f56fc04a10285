"""Isolated mode: a plugin in a worker process of its own, supervised by the host."""
