"""Uploaded files for the stand-in: the ``files`` namespace and images in chat histories.

``uploadFileBase64`` takes ``{"name", "contentBase64"}`` and returns ``{"identifier",
"fileType", "sizeBytes"}`` (the wire shape of both official SDKs). Uploads are kept per
client identifier (the one sent in the authentication handshake), so one client cannot use
another client's handles. Only metadata is kept, never the bytes.

Images are recognised from their header, with the standard library only: PNG, JPEG, GIF,
WebP (lossy, lossless and extended) and BMP. A vision model "sees" an image as its format
and pixel size (:func:`describe_images`); a non-vision model given an image fails.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import struct
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _schema as s
from ._connection import Connection, Namespace, RpcEndpoint
from ._errors import StandInError

# Guess: LM Studio documents no upload limit. 10 MiB of decoded data per file.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# A file named like this must be an image the stand-in can read (guess).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
# Uploads kept per client, and for all clients together; the oldest are forgotten beyond
# these (guess). Only metadata is kept, and only the first MAX_KEPT_NAME characters of a name.
MAX_UPLOADS_PER_CLIENT = 1000
MAX_UPLOADS = 10_000
MAX_KEPT_NAME = 256


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "PNG" | "JPEG" | "GIF" | "WebP" | "BMP"
    width: int
    height: int


@dataclass(frozen=True)
class UploadedFile:
    identifier: str
    name: str
    file_type: str
    size_bytes: int
    image: ImageInfo | None = None


# --- recognising content ------------------------------------------------------------------------


def _png(data: bytes) -> ImageInfo | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return ImageInfo("PNG", width, height)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> ImageInfo | None:
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ImageInfo("JPEG", width, height)
        if length < 2:
            return None
        pos += 2 + length
    return None


def _gif(data: bytes) -> ImageInfo | None:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return ImageInfo("GIF", width, height)


def _webp(data: bytes) -> ImageInfo | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageInfo("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("WebP", width, height)
    return None


def _bmp(data: bytes) -> ImageInfo | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return ImageInfo("BMP", abs(width), abs(height))


def image_info(data: bytes) -> ImageInfo | None:
    """The format and pixel size of an image, from its header; ``None`` if not an image."""
    for parse in (_png, _jpeg, _gif, _webp, _bmp):
        info = parse(data)
        if info is not None and info.width > 0 and info.height > 0:
            return info
    return None


def _file_type(name: str, data: bytes, image: ImageInfo | None) -> str:
    if image is not None:
        return "image"
    if not data:
        return "unknown"  # LM Studio accepts empty uploads (the official suite sends one)
    if data[:5] == b"%PDF-":
        return "application/pdf"
    if data[:4] == b"PK\x03\x04" and name.lower().endswith(".docx"):
        return "application/word"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text/plain" if name.lower().endswith((".txt", ".md")) else "text/other"


def describe_image(info: ImageInfo) -> str:
    return f"a {info.format} image of {info.width}x{info.height} pixels"


def describe_images(images: Sequence[ImageInfo]) -> str:
    """What a vision model says first about the images of a prompt (deterministic)."""
    if not images:
        return ""
    if len(images) == 1:
        return f"The image is {describe_image(images[0])}. "
    parts = [f"Image {i} is {describe_image(info)}." for i, info in enumerate(images, 1)]
    return " ".join(parts) + " "


# --- errors -----------------------------------------------------------------------------------


def invalid_upload(reason: str) -> StandInError:
    return StandInError(f"Cannot upload file: {reason}")


def file_not_found(identifier: str) -> StandInError:
    return StandInError(
        f'File "{identifier}" not found',
        cause="Files are kept per client; upload it with uploadFileBase64 on this client.",
    )


def vision_not_supported(model_key: str) -> StandInError:
    # Guess: LM Studio's wording is not documented; the stand-in's own text.
    return StandInError(
        f'Model "{model_key}" does not support images',
        cause="The chat contains an image, but the model has no vision capability.",
        suggestion="Load a vision model (one whose vision flag is true) or remove the image.",
        display_data={"code": "generic.visionNotSupported", "modelKey": model_key},
    )


# --- the store ----------------------------------------------------------------------------------


def read_upload(name: str, content_base64: str) -> tuple[bytes, ImageInfo | None]:
    """The decoded content of an upload and, for an image, what it shows; raises the
    upload's error (not base64, over the size limit, named like an image but not one)."""
    try:
        data = base64.b64decode(content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_upload("contentBase64 is not valid base64") from None
    if len(data) > MAX_UPLOAD_BYTES:
        raise invalid_upload(
            f"{len(data)} bytes is more than the limit of {MAX_UPLOAD_BYTES} bytes"
        )
    image = image_info(data)
    if image is None and name.lower().endswith(IMAGE_SUFFIXES):
        raise invalid_upload(f'"{name}" is named like an image but is not a readable image')
    return data, image


_SAFE_NAME = re.compile(r"[^\w.\-]+")


@dataclass
class FileStore:
    """Uploads by client identifier, then by file identifier (insertion ordered).

    At most ``MAX_UPLOADS_PER_CLIENT`` per client and ``MAX_UPLOADS`` in all: the oldest
    are forgotten first, and a client none of whose uploads is left is forgotten too.
    """

    by_client: dict[str, dict[str, UploadedFile]] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Every kept upload as (client, identifier), oldest first.
    _order: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def _forget(self, client: str, identifier: str) -> None:
        files = self.by_client.get(client)
        if files is not None:
            files.pop(identifier, None)
            if not files:
                del self.by_client[client]
        self._order.pop((client, identifier), None)

    def __len__(self) -> int:
        return len(self._order)

    def upload(self, client: str, name: str, content_base64: str) -> UploadedFile:
        data, image = read_upload(name, content_base64)
        safe = _SAFE_NAME.sub("_", name).strip("._") or "file"
        identifier = f"{next(self._counter):06d}-{safe[-64:]}"
        kept_name = name[:MAX_KEPT_NAME]
        stored = UploadedFile(
            identifier, kept_name, _file_type(name, data, image), len(data), image
        )
        files = self.by_client.setdefault(client, {})
        files[identifier] = stored
        self._order[(client, identifier)] = None
        while len(files) > MAX_UPLOADS_PER_CLIENT:
            self._forget(client, next(iter(files)))
        while len(self._order) > MAX_UPLOADS:
            self._forget(*next(iter(self._order)))
        return stored

    def get(self, client: str, identifier: str) -> UploadedFile:
        found = self.by_client.get(client, {}).get(identifier)
        if found is None:
            raise file_not_found(identifier)
        return found

    def images_in(self, client: str, history: Mapping[str, Any]) -> list[ImageInfo]:
        """The images among a ChatHistoryData's file parts (each must be this client's).

        Other files (text, PDF) are not images; the prompt shows them as ``[file: NAME]``.
        """
        images: list[ImageInfo] = []
        for message in history.get("messages", []):
            if not isinstance(message, Mapping):
                continue
            for part in message.get("content", []):
                if isinstance(part, Mapping) and part.get("type") == "file":
                    stored = self.get(client, str(part.get("identifier", "")))
                    if stored.image is not None:
                        images.append(stored.image)
        return images


def upload_reply(stored: UploadedFile) -> dict[str, Any]:
    return {
        "identifier": stored.identifier,
        "fileType": stored.file_type,
        "sizeBytes": stored.size_bytes,
    }


# --- the namespace ------------------------------------------------------------------------------


def _upload(conn: Connection, param: dict[str, Any]) -> Any:
    store: FileStore = conn.rt.state.files
    stored = store.upload(conn.client_identifier or "", param["name"], param["contentBase64"])
    return upload_reply(stored)


def files_namespace() -> Namespace:
    """The ``files`` namespace: ``uploadFileBase64`` (other endpoints are unknown)."""
    rpc = {
        "uploadFileBase64": RpcEndpoint(
            s.obj({"name": s.string, "contentBase64": s.string}), _upload
        ),
    }
    return Namespace(rpc, {})
