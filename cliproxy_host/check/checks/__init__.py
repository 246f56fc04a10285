"""The checks of the suite, by concern; each is `check_*(run) -> list[CheckResult]`."""
