"""The plugin store (the Go host's): registries, downloads, verification, installs, uploads.

registry: the registry JSON and its validation · sources: the official source and
`plugins.store-sources` · fetch: capped, timed, streamed downloads · unpack: the zip layout ·
place: the atomic write into the plugins dir · trust: the isolation an installed plugin
gets · install: a store install or an upload, end to end · listing: the store's list.
"""
