"""Images: ``files.uploadFileBase64`` and images in ``predict`` histories, over raw sockets."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._files import MAX_UPLOAD_BYTES, ImageInfo, image_info

from ._wire import RawClient, Socket, messages, stack

VISION = "mobilevlm_v2-1.7b"
LLAMA = "llama-3.2-1b-instruct"


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80\x00\x80" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp(chunk: bytes, body: bytes) -> bytes:
    payload = b"WEBP" + chunk + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def webp_lossy(width: int, height: int) -> bytes:
    return webp(
        b"VP8 ", b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\0" * 8
    )


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return webp(b"VP8L", b"\x2f" + bits.to_bytes(4, "little") + b"\0" * 8)


def webp_extended(width: int, height: int) -> bytes:
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return webp(b"VP8X", b"\x10\0\0\0" + size + b"\0" * 8)


def bmp(width: int, height: int) -> bytes:
    return b"BM" + b"\0" * 16 + struct.pack("<ii", width, -height) + b"\0" * 28


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(3, 2), ImageInfo("PNG", 3, 2)),
        (jpeg(640, 480), ImageInfo("JPEG", 640, 480)),
        (gif(17, 9), ImageInfo("GIF", 17, 9)),
        (webp_lossy(320, 200), ImageInfo("WebP", 320, 200)),
        (webp_lossless(5, 7), ImageInfo("WebP", 5, 7)),
        (webp_extended(4000, 3000), ImageInfo("WebP", 4000, 3000)),
        (bmp(12, 34), ImageInfo("BMP", 12, 34)),
        (b"\x89PNG\r\n\x1a\n", None),
        (b"\xff\xd8\xff\xe0\x00\x01", None),
        (b"hello world", None),
        (png(0, 5), None),
    ],
)
def test_image_headers(data: bytes, expected: ImageInfo | None) -> None:
    assert image_info(data) == expected


@pytest.fixture
async def files(client: RawClient) -> Socket:
    return await client.connect("files")


async def _upload(sock: Socket, name: str, data: bytes | str) -> dict[str, Any]:
    content = data if isinstance(data, str) else base64.b64encode(data).decode()
    return await sock.rpc("uploadFileBase64", {"name": name, "contentBase64": content})


async def test_upload_returns_a_fresh_handle_each_time(files: Socket) -> None:
    data = png(8, 8)
    first = await _upload(files, "dot.png", data)
    again = await _upload(files, "dot.png", data)
    assert first["type"] == again["type"] == "rpcResult"
    assert first["result"]["fileType"] == "image"
    assert first["result"]["sizeBytes"] == len(data)
    assert set(first["result"]) == {"identifier", "fileType", "sizeBytes"}
    assert first["result"]["identifier"] != again["result"]["identifier"]
    text = await _upload(files, "notes.txt", b"plain words")
    assert text["result"]["fileType"] == "text/plain"
    pdf = await _upload(files, "doc", b"%PDF-1.7 ...")
    assert pdf["result"]["fileType"] == "application/pdf"
    blob = await _upload(files, "blob.bin", b"\xff\xfe\x00\x81")
    assert blob["result"]["fileType"] == "unknown"
    empty = await _upload(files, "nothing", b"")
    assert empty["result"] == {**empty["result"], "fileType": "unknown", "sizeBytes": 0}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.png", "not base64!!", "not valid base64"),
        ("a.png", base64.b64encode(b"no image here").decode(), "not a readable image"),
    ],
)
async def test_bad_uploads_are_errors(files: Socket, name: str, content: str, message: str) -> None:
    reply = await _upload(files, name, content)
    assert reply["type"] == "rpcError"
    assert message in reply["error"]["title"]


async def test_the_size_limit(files: Socket) -> None:
    at_limit = await _upload(files, "big.bin", b"\0" * MAX_UPLOAD_BYTES)
    assert at_limit["result"]["sizeBytes"] == MAX_UPLOAD_BYTES
    over = await _upload(files, "big.bin", b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert over["type"] == "rpcError"
    assert "limit" in over["error"]["title"]


def _chat(text: str, *handles: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "file", "fileType": "image", **h} for h in handles]
    return {"messages": [{"role": "user", "content": parts}]}


def _predict(model: str, history: dict[str, Any]) -> dict[str, Any]:
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": model}},
        "history": history,
        "predictionConfigStack": stack(),
    }


def _text(frames: list[dict[str, Any]]) -> str:
    return "".join(m["fragment"]["content"] for m in messages(frames) if m["type"] == "fragment")


async def test_a_vision_model_describes_the_images(
    server: StandInServer, client: RawClient, files: Socket
) -> None:
    server.preload(VISION)
    llm = await client.connect("llm")
    one = (await _upload(files, "x.png", png(31, 7)))["result"]
    two = (await _upload(files, "y", jpeg(1024, 768)))["result"]
    handle = {"name": "x.png", "identifier": one["identifier"], "sizeBytes": one["sizeBytes"]}
    reply = _text(await llm.channel("predict", _predict(VISION, _chat("What is it?", handle))))
    assert reply.startswith("The image is a PNG image of 31x7 pixels. ")
    second = {"name": "y", "identifier": two["identifier"], "sizeBytes": two["sizeBytes"]}
    reply = _text(
        await llm.channel("predict", _predict(VISION, _chat("And these?", handle, second)))
    )
    assert reply.startswith(
        "Image 1 is a PNG image of 31x7 pixels. Image 2 is a JPEG image of 1024x768 pixels. "
    )


async def test_images_need_a_vision_model_and_this_clients_upload(
    server: StandInServer, client: RawClient, files: Socket
) -> None:
    server.preload(LLAMA)
    server.preload(VISION)
    llm = await client.connect("llm")
    up = (await _upload(files, "x.png", png(2, 2)))["result"]
    handle = {"name": "x.png", "identifier": up["identifier"], "sizeBytes": up["sizeBytes"]}
    frames = await llm.channel("predict", _predict(LLAMA, _chat("What is it?", handle)))
    error = frames[-1]
    assert error["type"] == "channelError"
    assert error["error"]["title"] == f'Model "{LLAMA}" does not support images'
    assert error["error"]["displayData"]["code"] == "generic.visionNotSupported"
    # another client (identifier) cannot use the handle
    other = await client.connect("llm", identifier="guest:someone-else")
    frames = await other.channel("predict", _predict(VISION, _chat("What is it?", handle)))
    assert frames[-1]["type"] == "channelError"
    assert "not found" in frames[-1]["error"]["title"]
    # a non-image file is only named in the prompt, even for a text-only model
    note = (await _upload(files, "n.txt", b"words"))["result"]
    text_handle = {"name": "n.txt", "identifier": note["identifier"], "sizeBytes": 5}
    frames = await llm.channel("predict", _predict(LLAMA, _chat("Summarise", text_handle)))
    assert messages(frames)[-1]["type"] == "success"
