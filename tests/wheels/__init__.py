"""Plugins shipped as wheels: the cliproxy_host.plugins entry-point group."""
