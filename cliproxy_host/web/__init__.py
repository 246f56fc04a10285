"""What both HTTP APIs (management under /v0, the gateway under /v1) share: key checks,
the failure limiter, the loopback rule and the caps on a request's head and body."""
