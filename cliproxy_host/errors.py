"""The error tree: every failure a plugin, the host or a caller can see, as one class hierarchy.

Each class knows its wire `code`, whether a retry can help (`retryable`) and the HTTP status
that fits it (`http_status`), so callers branch on the class (`except PluginTimeout:`)
instead of comparing strings. An instance may carry a different retryable or status when
a plugin said so in its error envelope. `PluginError.from_code` turns a code read off the
wire back into the class that owns it; a code no class owns (a plugin's own) stays a
plain `PluginError` with that code.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import orjson


class PluginError(Exception):
    """An error from or about a plugin: what failed, where, and what to do about it."""

    code: ClassVar[str] = "plugin_error"
    default_retryable: ClassVar[bool] = False
    default_http_status: ClassVar[int] = 500
    _by_code: ClassVar[dict[str, type[PluginError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The first class to claim a code owns it; subclasses that only refine a family
        # declare a code of their own.
        PluginError._by_code.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        plugin_id: str | None = None,
        method: str | None = None,
        retryable: bool | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code  # type: ignore[misc]  # a plugin's own code on this instance
        self.message = message
        self.plugin_id = plugin_id
        self.method = method
        # What the error's source said explicitly; only that travels in envelopes, so the
        # wire stays exactly what the plugin or the host's call site wrote.
        self.explicit_retryable = retryable
        self.explicit_http_status = http_status

    @classmethod
    def from_code(
        cls,
        code: str,
        message: str,
        *,
        plugin_id: str | None = None,
        method: str | None = None,
        retryable: bool | None = None,
        http_status: int | None = None,
    ) -> PluginError:
        """The error a code read off the wire stands for, as the class that owns the code."""
        owner = PluginError._by_code.get(code, PluginError)
        return owner(
            message,
            code=code,
            plugin_id=plugin_id,
            method=method,
            retryable=retryable,
            http_status=http_status,
        )

    @classmethod
    def class_named(cls, name: str) -> type[PluginError] | None:
        """The class of the tree with this name (the isolated wire sends class names)."""
        for owner in PluginError._by_code.values():
            if owner.__name__ == name:
                return owner
        return PluginError if name == PluginError.__name__ else None

    @property
    def retryable(self) -> bool:
        if self.explicit_retryable is not None:
            return self.explicit_retryable
        return self.default_retryable

    @property
    def http_status(self) -> int:
        if self.explicit_http_status is not None:
            return self.explicit_http_status
        return self.default_http_status

    def __str__(self) -> str:
        where = f"plugin {self.plugin_id}" if self.plugin_id else "plugin host"
        if self.method:
            where += f", {self.method}"
        return f"{where}: {self.code}: {self.message}"

    def to_envelope(self) -> bytes:
        """The error envelope that carries this error to a plugin or a caller."""
        return orjson.dumps({"ok": False, "error": self.error_dict()})

    def error_dict(self) -> dict[str, Any]:
        """The `error` object of an envelope: code, message and what was said explicitly."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.explicit_retryable is not None:
            body["retryable"] = self.explicit_retryable
        if self.explicit_http_status is not None:
            body["http_status"] = self.explicit_http_status
        return body


# -- loading -----------------------------------------------------------------------------


class PluginLoadError(PluginError):
    """A plugin file could not be loaded, initialised or registered."""

    code = "plugin_load_failed"


class PluginInitFailed(PluginLoadError):
    """cliproxy_plugin_init returned non-zero or left the function table unusable."""

    code = "plugin_init_failed"


class AbiVersionMismatch(PluginLoadError):
    """The plugin speaks another ABI version than the host."""

    code = "abi_version_mismatch"


class InvalidRegistration(PluginLoadError):
    """plugin.register answered, but not with a registration the host can accept."""

    code = "invalid_registration"


class RegistrationTimeout(PluginLoadError):
    """Loading and registering did not finish within the registration timeout."""

    code = "registration_timeout"
    default_http_status = 504


class PluginUntrusted(PluginLoadError):
    """The plugin file fails its trust checks (sha256 pin, signature): it is not loaded."""

    code = "plugin_untrusted"
    default_http_status = 403


class ChecksumMismatch(PluginUntrusted):
    """The file's sha256 is not the one pinned in the config (`sha256 mismatch: ...`)."""

    code = "sha256_mismatch"


class SignatureInvalid(PluginUntrusted):
    """The file's `.sig` is malformed, or no key of plugins.trusted-keys made it."""

    code = "signature_invalid"


class SignatureMissing(PluginUntrusted):
    """plugins.require-signature is true and the file has no `.sig`."""

    code = "signature_missing"


class HandshakeRefused(PluginLoadError):
    """A plugin program's rpc.hello was refused: wrong plugin ID or token (docs/PROTOCOL.md)."""

    code = "handshake_refused"


# -- answers that break the contract -----------------------------------------------------


class PluginResponseError(PluginError):
    """A plugin answered bytes that break the envelope contract."""

    code = "invalid_response"
    default_http_status = 502


class ResponseTooLarge(PluginResponseError):
    """A response (a plugin's, or an upstream's for host.http.do) is over its size cap."""

    code = "response_too_large"


class PluginCallFailed(PluginError):
    """The plugin's call() returned non-zero without an error envelope."""

    code = "plugin_call_failed"
    default_http_status = 502


# -- runtime faults ----------------------------------------------------------------------


class PluginTimeout(PluginError):
    """A call did not answer within its timeout."""

    code = "plugin_timeout"
    default_retryable = True
    default_http_status = 504


class PluginCrashed(PluginError):
    """The process running the plugin died during the call."""

    code = "plugin_crashed"
    default_retryable = True
    default_http_status = 502


class PluginBusy(PluginError):
    """Cannot take the call now: call slots full, still loading, or its worker out of fds/memory."""

    code = "plugin_busy"
    default_retryable = True
    default_http_status = 503


class PluginUnavailable(PluginError):
    """The plugin is not taking calls: its circuit is open, or its worker is fused."""

    code = "plugin_unavailable"
    default_retryable = True
    default_http_status = 503


class PluginNotLoaded(PluginUnavailable):
    """The plugin is known (a file or a config entry) but is not loaded."""

    code = "plugin_not_loaded"
    default_retryable = False


class PluginUnloading(PluginUnavailable):
    """The plugin is being shut down; the call never reached it."""

    code = "plugin_unloading"


# -- who and what ------------------------------------------------------------------------


class PluginNotFound(PluginError):
    """No plugin file or config entry has this ID."""

    code = "plugin_not_found"
    default_http_status = 404


class InvalidPluginId(PluginError):
    """The ID does not match the plugin ID pattern."""

    code = "invalid_plugin_id"
    default_http_status = 400


class PluginNotAllowed(PluginError):
    """The host's policy does not allow what the plugin asked for."""

    code = "plugin_not_allowed"
    default_http_status = 403


class HostNotAllowed(PluginNotAllowed):
    """host.http.* asked for a host outside the allowed hosts."""

    code = "host_not_allowed"


class NoHandler(PluginError):
    """Neither a native handler nor any loaded plugin handles the method."""

    code = "no_handler"
    default_http_status = 501


class NativeHandlerFailed(PluginError):
    """A Python handler registered with register_native raised."""

    code = "native_handler_failed"


class InvalidConfig(PluginError):
    """A config value the host refuses: it names the key, the line and the fix."""

    code = "invalid_config"
    default_http_status = 400


class ConfigError(InvalidConfig, ValueError):
    """The config file is missing, is not YAML, or does not validate; the message says where.

    A ValueError too, as it was before the tree: `except ValueError` around a config load
    keeps working. Its text is the message alone, which already names the file and line.
    """

    def __str__(self) -> str:
        return self.message


class ConfigSaveFailed(PluginError):
    """The host could not write its config file (or delete a plugin's files)."""

    code = "config_save_failed"


class ConfigConflict(PluginError):
    """Another replica changed the plugin's entry in the config store since this one read it."""

    code = "config_conflict"
    default_http_status = 409


class BodyTooLarge(PluginError):
    """A request body larger than the management API takes (remote-management.max-body-bytes)."""

    code = "body_too_large"
    default_http_status = 413


class UriTooLong(PluginError):
    """A management request whose path and query are longer than the API takes (414)."""

    code = "uri_too_long"
    default_http_status = 414


class HeadersTooLarge(PluginError):
    """A management request with too many headers, or too many bytes of them (431)."""

    code = "headers_too_large"
    default_http_status = 431


# -- the plugin store and uploads ----------------------------------------------------------


class PluginInstallFailed(PluginError):
    """A store download or an upload was refused (size, sha256, zip layout); nothing installed.

    Unreachable, larger than its cap or its declared size, cut short, a sha256 that does
    not match, a zip that breaks the layout, or a file this host cannot load.
    """

    code = "plugin_install_failed"
    default_http_status = 502


class UploadInvalid(PluginInstallFailed):
    """An uploaded plugin file was refused (sha256, zip layout, not a library for here)."""

    code = "plugin_upload_invalid"
    default_http_status = 400


class StoreRegistryFailed(PluginInstallFailed):
    """No store source could be read (unreachable, not JSON, or not a valid registry)."""

    code = "plugin_store_registry_failed"


class PluginManifestInvalid(PluginInstallFailed):
    """The registry's entry cannot be installed: no such version, or no artifact for here."""

    code = "plugin_manifest_invalid"


class StoreSourceNotFound(PluginNotFound):
    """`?source=` names no configured store source."""

    code = "plugin_store_source_not_found"


class StoreSourceRequired(PluginError):
    """Several store sources list the plugin: `?source=` must say which."""

    code = "plugin_store_source_required"
    default_http_status = 409

    def __init__(self, message: str, *, sources: list[dict[str, str]], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sources = sources  # {id, name, url} of each source listing the plugin


class StoreSourceConflict(PluginError):
    """The plugin was installed from another store source (or one that cannot be told)."""

    code = "plugin_store_source_conflict"
    default_http_status = 409


class StoreSourceInvalid(PluginError):
    """The configured store sources cannot be used (two URLs with one source ID)."""

    code = "plugin_store_source_invalid"


class PluginDirectoryInvalid(PluginError):
    """The plugins directory cannot take an installed file (missing, or not a directory)."""

    code = "plugin_directory_invalid"


# -- the model pipeline ------------------------------------------------------------------


class UnsupportedFormat(PluginError):
    """No executor format fits the request, or no translator reaches one (executor formats)."""

    code = "unsupported_format"
    default_http_status = 400


class RequestRejected(PluginError):
    """A request interceptor ended the request (Terminate) before it reached an executor."""

    code = "request_rejected"
    default_http_status = 403

    def __init__(
        self,
        message: str,
        *,
        response_body: bytes = b"",
        response_headers: dict[str, list[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        # What the interceptor wants the client to get instead (ResponseBody, ResponseHeaders).
        self.response_body = response_body
        self.response_headers = response_headers or {}


# -- host callbacks ----------------------------------------------------------------------


class HostCallFailed(PluginError):
    """A host callback (host.*) could not do what the plugin asked."""

    code = "host_call_failed"
    default_http_status = 502


class InvalidRequest(HostCallFailed):
    """A request that is malformed: wrong JSON, a missing or mistyped field."""

    code = "invalid_request"
    default_http_status = 400


class UnknownStream(HostCallFailed):
    """A stream ID that is not open (never was, finished, or closed)."""

    code = "unknown_stream"
    default_http_status = 404


class UnknownAuth(HostCallFailed):
    """An auth_index that names no credential in the auth dir (or one that cannot be read)."""

    code = "unknown_auth"
    default_http_status = 404


class ModelCallTooDeep(HostCallFailed):
    """host.model.* calls nested deeper than plugins.model-call-depth allows."""

    code = "model_call_too_deep"
    default_http_status = 508


class PermissionDenied(HostCallFailed):
    """A host callback, topic, plugin or host the plugin's permissions do not grant."""

    code = "permission_denied"
    default_http_status = 403


class PluginCallTooDeep(HostCallFailed):
    """host.plugin.call / host.dispatch nested deeper than plugins.plugin-call-depth."""

    code = "plugin_call_too_deep"
    default_http_status = 508


class PluginCallCycle(HostCallFailed):
    """host.plugin.call back into a plugin already on the call's chain (A -> B -> A)."""

    code = "plugin_call_cycle"
    default_http_status = 508


class UpstreamError(HostCallFailed):
    """host.http.* could not reach the upstream, or the connection broke."""

    code = "upstream_error"
    default_retryable = True


class UpstreamTimeout(HostCallFailed):
    """host.http.* timed out talking to the upstream."""

    code = "host_timeout"
    default_retryable = True
    default_http_status = 504


# A plugin answering one of these did not handle the request: dispatch moves on.
DECLINE_CODES: Final = frozenset(
    {"not_handled", "unsupported", "unknown_method", "not_implemented", "method_not_found"}
)


def error_classes() -> list[type[PluginError]]:
    """Every class of the tree, root first then by code: the docs' table is made from it."""
    return [
        PluginError,
        *sorted(set(PluginError._by_code.values()) - {PluginError}, key=lambda c: c.code),
    ]
