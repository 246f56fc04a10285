"""An upload of a plugin file (PUT /v0/management/plugins/{id}/file): streamed to disk under
plugins.max-upload-bytes, then installed as a store download is."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from ...errors import BodyTooLarge
from ...store.fetch import Fetched
from ...store.install import InstallRequest, StoreInstaller
from ..audit import Caller, audited
from ..deps import PluginId, Service
from ..errors import ApiError, error_responses
from ..plugin_routes import BASE_PATH
from .plugin_store import IsolationParam

FILE = f"{BASE_PATH}/plugins/{{plugin_id}}/file"
_FILE_RE: Final = re.compile(rf"^{re.escape(BASE_PATH)}/plugins/[^/]+/file$")

# Not JsonBodyRoute: the body is the file.
router = APIRouter()


def is_upload(scope: Scope) -> bool:
    """Whether a request is an upload: its body has its own cap (plugins.max-upload-bytes),
    so the management API's body cap does not apply to it."""
    return scope.get("method") == "PUT" and _FILE_RE.match(scope.get("path", "")) is not None


# What a file may be sent as; none at all is taken too, and the form type, which curl's
# --data-binary sends unless told otherwise.
_FILE_TYPES: Final = frozenset(
    {"application/octet-stream", "application/zip", "application/x-www-form-urlencoded"}
)


def _check_type(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and content_type not in _FILE_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the upload came with Content-Type {content_type}; send the file as"
            " application/octet-stream (or application/zip)",
        )


def _too_large(size: str, cap: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the upload is {size}; plugins.max-upload-bytes is {cap}: send a smaller file or"
        " raise plugins.max-upload-bytes in the config"
    )


async def _receive(request: Request, directory: Path, cap: int) -> Fetched:
    """The body streamed into a temp file in `directory`, hashed as it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(f"{declared} bytes", cap)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".part")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise _too_large(f"more than {cap} bytes", cap)
                out.write(chunk)
                digest.update(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Fetched(path, size, digest.hexdigest())


@router.put(
    FILE,
    summary="Upload a plugin file",
    responses=error_responses(400, 401, 403, 409, 413, 414, 415, 429, 431, 500, 502),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload(
    plugin_id: PluginId,
    request: Request,
    service: Service,
    *,
    version: Annotated[str, Query(description="the file's version, e.g. 1.0.0")],
    sha256: Annotated[str | None, Query(description="the body's sha256, checked if given")] = None,
    signature: Annotated[
        str | None,
        Query(
            description="the library's detached ed25519 signature: the line `cliproxy-host "
            "sign` writes into FILE.sig",
            max_length=200,
        ),
    ] = None,
    isolation: Annotated[
        IsolationParam | None, Query(description="how the plugin runs; process if left out")
    ] = None,
) -> dict[str, Any]:
    """Install the body (the library, or a zip in the store's layout) as
    `<plugins-dir>/<os>/<arch>/<id>-v<version><ext>`, enable it and reload."""
    _check_type(request)
    installer = StoreInstaller(service)
    wanted = InstallRequest(
        plugin_id,
        version=version,
        isolation=isolation,
        signature=None if signature is None else signature.encode("ascii", "replace"),
    )
    detail = f"upload, version {version}"
    with audited(service, Caller.of(request), "plugin.upload", plugin_id, detail):
        directory = await run_in_threadpool(installer.upload_dir, wanted)
        cap = service.config.plugins.max_upload_bytes
        received = await _receive(request, directory, cap)
        installed = await run_in_threadpool(installer.install_upload, wanted, received, sha256)
    return installed.reply()
