"""The ``files`` namespace (``uploadFileBase64``) and file handles: pure, no I/O."""

from __future__ import annotations

import base64
from typing import Any, Literal, TypeAlias

import msgspec

__all__ = ["FileHandle", "FileType", "UploadReply", "upload_param"]

FileType: TypeAlias = Literal[
    "image", "text/plain", "application/pdf", "application/word", "text/other", "unknown"
]
"""What LM Studio made of an uploaded file (``FileHandle.file_type``)."""


class FileHandle(msgspec.Struct, frozen=True, kw_only=True):
    """A file uploaded to LM Studio (:meth:`FilesNamespace.prepare_image`), to attach to a
    user message: ``chat.add_user("What is this?", images=[handle])``.

    Handles belong to the connection that uploaded them (LM Studio keeps uploads per client).
    """

    name: str
    """The file name given at upload."""
    identifier: str
    """LM Studio's identifier of the upload."""
    size_bytes: int
    """Size of the uploaded content."""
    file_type: str
    """A :data:`FileType`, e.g. ``"image"`` (a ``str`` so that new kinds still decode)."""

    def to_wire(self) -> dict[str, Any]:
        """The wire ``file`` part of a chat message."""
        return {
            "type": "file",
            "name": self.name,
            "identifier": self.identifier,
            "sizeBytes": self.size_bytes,
            "fileType": self.file_type,
        }


class UploadReply(msgspec.Struct, frozen=True, rename="camel"):
    """``uploadFileBase64`` result."""

    identifier: str
    file_type: str
    size_bytes: int


def upload_param(name: str, data: bytes) -> dict[str, Any]:
    """Parameter of ``uploadFileBase64``."""
    return {"name": name, "contentBase64": base64.b64encode(data).decode("ascii")}
