"""The management REST API: the app factory, one router per resource, auth and models."""
