"""cliproxy-host check: a conformance suite for plugin authors."""
