"""The operator's console under /console: server-rendered pages over the host's service."""
