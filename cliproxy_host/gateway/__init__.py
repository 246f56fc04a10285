"""The client-facing API under /v1: client keys, plugin calls and dispatch, Server-Sent Events."""
