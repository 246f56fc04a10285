"""cliproxy-host check: a conformance suite for plugin authors.

`run_checks(path)` runs one plugin file through the ABI contract and answers a `Report`;
the CLI prints it as a table or JSON.
"""

from .report import CheckResult, Report, Status
from .suite import backend_factory, run_checks

__all__ = ["CheckResult", "Report", "Status", "backend_factory", "run_checks"]
