"""``client.files``: uploading images for predictions (the ``files`` namespace)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeAlias

import msgspec

from .._protocol.files import FileHandle, UploadReply, upload_param
from .._protocol.messages import decode_reply
from ..errors import LMStudioTimeoutError, LMStudioValueError, ProtocolError
from ..types import Timeouts
from .handle import USE_CLIENT_DEFAULT, TimeoutParam
from .threads import run_in_thread

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["FileSource", "FilesNamespace"]

FileSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]"
"""What :meth:`FilesNamespace.prepare_image` reads: a path, the bytes, or a binary file."""

_UPLOAD_DECODER: Final = msgspec.json.Decoder(UploadReply)

_INLINE_BYTES: Final = 1 << 20
"""Bytes up to this size are encoded in the event loop; larger ones in a worker thread."""


def _upload_param(src: object, name: str | None) -> tuple[str, dict[str, Any]]:
    """(name, ``uploadFileBase64`` parameter) of a source: the blocking and the CPU-heavy
    work of an upload, done in a worker thread (see :meth:`FilesNamespace.prepare_image`)."""
    file_name, data = _read_source(src, name)
    if not data:
        raise LMStudioValueError(f"prepare_image: {file_name!r} is empty")
    return file_name, upload_param(file_name, data)


def _read_source(src: object, name: str | None) -> tuple[str, bytes]:
    """(name, content) of a path, bytes-like value or binary file object."""
    if isinstance(src, bytes | bytearray | memoryview):
        return name or f"{uuid.uuid4()}", bytes(src)
    read = getattr(src, "read", None)
    if callable(read):
        try:
            data = read()
        except (OSError, ValueError) as exc:  # closed, write-only, a failing device
            raise LMStudioValueError(f"prepare_image: cannot read the file object: {exc}") from None
        if not isinstance(data, bytes | bytearray):
            raise LMStudioValueError(
                f"prepare_image: the file object returned {type(data).__name__}, not bytes; "
                "open it in binary mode ('rb')"
            )
        default = os.path.basename(str(getattr(src, "name", ""))) or f"{uuid.uuid4()}"
        return name or default, bytes(data)
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LMStudioValueError(f"prepare_image: cannot read {str(path)!r}: {exc}") from None
        return name or path.name, data
    raise LMStudioValueError(
        f"prepare_image takes a path, bytes or a binary file object, got {type(src).__name__}"
    )


class FilesNamespace:
    """``client.files``: files for predictions (images, for now)."""

    _name = "files"

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<FilesNamespace of {self._client!r}>"

    async def prepare_image(
        self,
        src: FileSource,
        name: str | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> FileHandle:
        """Upload an image (a path, its bytes, or a binary file object) and return the
        :class:`FileHandle` to attach to a user message::

            image = await client.files.prepare_image("cat.png")
            reply = await llm.respond(Chat().add_user("What is this?", images=[image]))

        ``name`` defaults to the file's name (a random one for bytes). A path or file object
        is read in a worker thread. Raises :class:`LMStudioValueError` for an unreadable
        source, an empty file or one LM Studio does not take for an image, and
        :class:`ServerError` for an upload LM Studio refuses (over its size limit, not
        decodable). One larger than the largest WebSocket message LM Studio takes ends with
        an :class:`LMStudioConnectionError`: it closes the socket (code 1009, "a message was
        too big"), and the next call reconnects.
        """
        if name is not None and (not isinstance(name, str) or not name):
            raise LMStudioValueError(
                f"prepare_image: name must be a non-empty string, got {name!r}"
            )
        timeouts = self._client._timeouts_for(timeout)
        if isinstance(src, bytes | bytearray | memoryview) and len(src) <= _INLINE_BYTES:
            file_name, param = _upload_param(src, name)
        else:
            file_name, param = await self._prepare(src, name, timeouts)
        raw = await self._client._rpc(
            self._name,
            "uploadFileBase64",
            param,
            timeout=timeouts,
            operation="Image upload",
            subject=file_name,
        )
        if raw is None:
            raise ProtocolError(f"LM Studio sent no result for the upload of {file_name!r}")
        reply = decode_reply(_UPLOAD_DECODER, raw, "upload result")
        if reply.file_type != "image":
            raise LMStudioValueError(
                f"prepare_image: LM Studio does not take {file_name!r} for an image "
                f"(it reads it as {reply.file_type!r})"
            )
        return FileHandle(
            name=file_name,
            identifier=reply.identifier,
            size_bytes=reply.size_bytes,
            file_type=reply.file_type,
        )

    async def _prepare(
        self, src: object, name: str | None, timeouts: Timeouts
    ) -> tuple[str, dict[str, Any]]:
        """:func:`_upload_param` in a worker thread (a path or file object may block: a
        slow disk, a pipe), within the call's total deadline, else its idle one."""
        kind, limit = ("total", timeouts.total) if timeouts.total is not None else (
            "idle",
            timeouts.idle,
        )
        try:
            async with asyncio.timeout(limit):
                return await run_in_thread(_upload_param, src, name)
        except TimeoutError:
            what = name or getattr(src, "name", None) or type(src).__name__
            raise LMStudioTimeoutError(
                f"prepare_image: reading {str(what)!r} took longer than the {kind} deadline "
                f"({limit:g} s)",
                timeout=limit,
                kind=kind,
            ) from None
