"""Plugins that are programs in any language, speaking the socket protocol (docs/PROTOCOL.md)."""
