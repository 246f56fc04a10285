"""Baselines the figures are measured against: raw cffi, hand-written ctypes, socket JSON-RPC."""
