"""The server's one ASGI application: the management API and the gateway side by side."""
