"""Benchmarks for cliproxy-host: every figure is a ratio against a baseline measured in the
same run. Entry point: ``python bench/run.py [--quick] [--only N] [--out bench/RESULTS.md]``.

These are measurement tools, not product code: nothing in cliproxy_host imports them.
"""
