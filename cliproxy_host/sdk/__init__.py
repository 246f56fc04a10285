"""The Python SDK for plugin programs (docs/PROTOCOL.md): what a plugin author imports.

It imports nothing of the host: a plugin program needs only this package and the standard
library. A minimal plugin::

    from cliproxy_host.sdk import Plugin, Request

    plugin = Plugin("echo", version="1.0.0", capabilities=["executor"])

    @plugin.method("executor.execute")
    def execute(request: Request) -> dict:
        return {"Payload": request.get("Payload")}

    plugin.run()
"""

from .host import Host, HostError
from .plugin import Plugin, PluginFailure
from .request import Request, b64, unb64

__all__ = ["Host", "HostError", "Plugin", "PluginFailure", "Request", "b64", "unb64"]
