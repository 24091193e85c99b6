"""Images over HTTP: data-URL images reach the engine as uploads do over WebSocket, so a
vision model describes them identically and a model without vision refuses them."""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib

import aiohttp
import openai
import pytest

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._http import MAX_BODY_BYTES

from .._wire import RawClient, messages, stack
from ._http import call, stream

VLM = "mobilevlm_v2-1.7b"
SMOL = "smollm2-135m-instruct"
QUESTION = "What is in this picture?"


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x10\x80\x30" * width for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chat(model: str, url: str) -> dict[str, object]:
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def test_a_vision_model_describes_the_image_as_over_websocket(
    server: StandInServer, client: RawClient
) -> None:
    server.preload(VLM)
    image = png(32, 24)
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", _chat(VLM, data_url(image))
    )
    assert status == 200, reply
    text = reply["choices"][0]["message"]["content"]
    assert text.startswith("The image is ")
    assert "32" in text.split(".")[0]
    # the same image uploaded over WebSocket, under the name the HTTP layer gives it
    files = await client.connect("files")
    uploaded = await files.rpc(
        "uploadFileBase64", {"name": "image.png", "contentBase64": base64.b64encode(image).decode()}
    )
    handle = uploaded["result"]["identifier"]
    llm = await client.connect("llm")
    file_part = {
        "type": "file",
        "name": "image.png",
        "identifier": handle,
        "sizeBytes": uploaded["result"]["sizeBytes"],
        "fileType": uploaded["result"]["fileType"],
    }
    parts = [{"type": "text", "text": QUESTION}, file_part]
    frames = await llm.channel(
        "predict",
        {
            "modelSpecifier": {"type": "query", "query": {"identifier": VLM}},
            "history": {"messages": [{"role": "user", "content": parts}]},
            "predictionConfigStack": stack(),
        },
    )
    packets = messages(frames)
    ws_text = "".join(p["fragment"]["content"] for p in packets if p["type"] == "fragment")
    assert text == ws_text
    assert reply["usage"]["prompt_tokens"] == packets[-1]["stats"]["promptTokensCount"]
    # REST v1 chat takes images as input items
    status, v1 = await call(
        server.url,
        "POST",
        "/api/v1/chat",
        {
            "model": VLM,
            "input": [
                {"type": "message", "content": QUESTION},
                {"type": "image", "data_url": data_url(image)},
            ],
        },
    )
    assert status == 200, v1
    assert v1["output"][0]["content"].startswith(text.split(".")[0])


async def test_images_a_model_cannot_take_are_refused(server: StandInServer) -> None:
    server.preload(SMOL)
    image = data_url(png(4, 4))
    status, body = await call(server.url, "POST", "/v1/chat/completions", _chat(SMOL, image))
    assert status == 400
    assert body["error"]["code"] == "vision_not_supported"
    not_an_image = data_url(b"plain text, not pixels")
    for url in (not_an_image, "https://example.com/cat.png", "data:image/png;base64,%%%"):
        status, body = await call(server.url, "POST", "/v1/chat/completions", _chat(VLM, url))
        assert status == 400, url
        assert body["error"]["param"] == "messages[0].content[1].image_url", url
    assert [i.identifier for i in server.loaded_instances()] == [SMOL]  # nothing JIT-loaded


async def test_a_v1_chat_stream_that_fails_after_it_started_still_ends_with_chat_end(
    server: StandInServer,
) -> None:
    # LM Studio: the stream "concludes with chat.end", also after an error event. Here the
    # model is loaded just in time (the stream has started), then refuses the image.
    body = {
        "model": "llama-3.2-1b-instruct",  # no vision
        "stream": True,
        "input": [
            {"type": "message", "content": "Describe"},
            {"type": "image", "data_url": data_url(png(4, 4))},
        ],
    }
    events = await stream(server.url, "/api/v1/chat", body)
    names = [name for name, _ in events if name is not None]
    assert names[0] == "chat.start"
    assert names[-2:] == ["error", "chat.end"]
    error = events[-2][1]["error"]
    assert error["code"] == "vision_not_supported"
    result = events[-1][1]["result"]
    assert result["model_instance_id"] == "llama-3.2-1b-instruct"
    assert result["output"] == []


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress (like a photo): about 3 bytes a pixel."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rng = random.Random(7)
    rows = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 0))


async def test_a_photo_sized_image_fits_in_a_request(server: StandInServer) -> None:
    url = data_url(noise_png(1024, 1024))  # a 3 MB image: a 4 MB request body
    assert len(url) > 4_000_000
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="lm-studio", max_retries=0, timeout=20
    ) as api:
        reply = await api.chat.completions.create(
            model=VLM,
            max_tokens=5,
            messages=_chat(VLM, url)["messages"],  # type: ignore[arg-type]
        )
    assert reply.choices[0].message.content


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat"])
async def test_a_body_over_the_limit_is_a_json_413(server: StandInServer, path: str) -> None:
    raw = b'{"model": "%s", "input": "' % SMOL.encode() + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + path, data=io.BytesIO(raw)) as resp,
    ):
        status, reply = resp.status, await resp.json()
    assert status == 413
    assert reply["error"]["code"] == "request_too_large"
    assert str(MAX_BODY_BYTES) in reply["error"]["message"]
    # each API's own error shape
    v1 = path.startswith("/api/v1/")
    assert reply["error"]["type"] == ("invalid_request" if v1 else "invalid_request_error")


async def test_a_stored_conversation_keeps_its_image(server: StandInServer) -> None:
    """A stored /api/v1/chat or /v1/responses conversation whose first turn had an image can
    be continued however many images later requests carry, stored or not (they once all
    shared one upload store of 1000 files, and a follow-up failed naming a WebSocket RPC)."""
    first_image = data_url(png(40, 30))
    status, v1_first = await call(
        server.url,
        "POST",
        "/api/v1/chat",
        {
            "model": VLM,
            "input": [
                {"type": "text", "content": "Describe"},
                {"type": "image", "data_url": first_image},
            ],
            "max_output_tokens": 12,
        },
    )
    assert status == 200, v1_first
    assert "40x30" in v1_first["output"][0]["content"]
    responses_input = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe"},
                {"type": "input_image", "image_url": first_image},
            ],
        }
    ]
    status, resp_first = await call(
        server.url,
        "POST",
        "/v1/responses",
        {"model": VLM, "input": responses_input, "max_output_tokens": 12},
    )
    assert status == 200, resp_first
    # 1001 more images: one stateless request, then a stored one
    many = [{"type": "image", "data_url": data_url(png(4, 4))} for _ in range(1001)]
    for store in (False, True):
        status, reply = await call(
            server.url,
            "POST",
            "/api/v1/chat",
            {"model": VLM, "input": many, "max_output_tokens": 1, "store": store},
        )
        assert status == 200, reply
    status, follow = await call(
        server.url,
        "POST",
        "/api/v1/chat",
        {
            "model": VLM,
            "input": "And what colour was it?",
            "previous_response_id": v1_first["response_id"],
            "max_output_tokens": 12,
        },
    )
    assert status == 200, follow
    assert "40x30" in follow["output"][0]["content"]  # the model still sees the first image
    status, follow = await call(
        server.url,
        "POST",
        "/v1/responses",
        {
            "model": VLM,
            "input": "And what colour was it?",
            "previous_response_id": resp_first["id"],
            "max_output_tokens": 12,
        },
    )
    assert status == 200, follow
    assert "40x30" in follow["output"][0]["content"][0]["text"]
