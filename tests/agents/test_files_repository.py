"""client.files and client.repository over real sockets, plus speculative decoding and the
embedding tokenizer's markers.

Parts that need a stand-in feature which is not there skip with the reason (the stand-in side
of issue 17 lands separately); the client-side checks always run.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async.cli import commands
from lmstudio_async.testing import ThreadedStandInServer, _endpoints

from .conftest import LLAMA, SMOL, VISION

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
NOMIC = "text-embedding-nomic-embed-text-v1.5"


def _serves(namespace: str, endpoint: str) -> bool:
    space = _endpoints.build_namespaces()[namespace]
    return endpoint in space.rpc or endpoint in space.channels


needs_uploads = pytest.mark.skipif(
    not _serves("files", "uploadFileBase64"), reason="stand-in has no files.uploadFileBase64 yet"
)
needs_hub = pytest.mark.skipif(
    not _serves("repository", "searchModels"), reason="stand-in has no repository namespace yet"
)


# --- files ---------------------------------------------------------------------------------


async def test_bad_sources_fail_before_sending(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, tmp_path: Path
) -> None:
    with pytest.raises(lms.LMStudioValueError, match="empty"):
        await client.files.prepare_image(b"")
    with pytest.raises(lms.LMStudioValueError, match="cannot read"):
        await client.files.prepare_image(tmp_path / "missing.png")
    with pytest.raises(lms.LMStudioValueError, match="path, bytes or a binary file"):
        await client.files.prepare_image(42)  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="binary mode"):
        await client.files.prepare_image(io.StringIO("text"))  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="name"):
        await client.files.prepare_image(PNG, name="")
    closed = io.BytesIO(PNG)
    closed.close()
    with pytest.raises(lms.LMStudioValueError, match="cannot read the file object"):
        await client.files.prepare_image(closed)
    with (
        open(tmp_path / "out.png", "wb") as write_only,  # noqa: ASYNC230
        pytest.raises(lms.LMStudioValueError, match="cannot read the file object"),
    ):
        await client.files.prepare_image(write_only)
    assert lmstudio_server.received_frames(namespace="files") == []


async def test_reading_a_source_that_blocks_has_the_calls_deadline(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, tmp_path: Path
) -> None:
    # A named pipe nobody writes to (or a hung network mount): the read waits in a worker
    # thread within the call's deadline; that thread does not keep the process alive.
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(lms.LMStudioTimeoutError, match=r"reading 'pipe\.png'") as info:
        await client.files.prepare_image(fifo, name="pipe.png", timeout=lms.Timeouts(total=0.3))
    assert (info.value.kind, info.value.timeout) == ("total", 0.3)
    reader = next(t for t in threading.enumerate() if t.name.startswith("lmstudio-thread"))
    assert reader.daemon
    with open(fifo, "wb"):  # noqa: ASYNC230 -- lets the stuck reader finish
        pass
    reader.join(5)
    assert lmstudio_server.received_frames(namespace="files") == []


@needs_uploads
async def test_prepare_image_from_bytes_path_and_file(
    client: lms.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    from_bytes = await client.files.prepare_image(PNG)
    from_path = await client.files.prepare_image(path)
    with path.open("rb") as handle:
        from_file = await client.files.prepare_image(handle, name="other.png")
    for image in (from_bytes, from_path, from_file):
        assert image.file_type == "image"
        assert image.size_bytes == len(PNG)
        assert image.identifier
    assert from_path.name == "dot.png"
    assert from_file.name == "other.png"


@needs_uploads
async def test_a_vision_model_sees_the_image(client: lms.AsyncClient) -> None:
    image = await client.files.prepare_image(PNG, name="dot.png")
    vision = await client.llm.model(VISION)
    reply = await vision.respond(lms.Chat().add_user("What is this?", images=[image]))
    assert "png" in reply.content.lower()
    smol = await client.llm.model(SMOL)
    with pytest.raises(lms.VisionNotSupportedError):
        await smol.respond(lms.Chat().add_user("What is this?", images=[image]))


@needs_uploads
async def test_data_that_is_not_an_image_is_refused(client: lms.AsyncClient) -> None:
    with pytest.raises((lms.LMStudioValueError, lms.ServerError)):
        await client.files.prepare_image(b"definitely not an image", name="x.png")


@needs_uploads
def test_sync_prepare_image(lmstudio_server: ThreadedStandInServer) -> None:
    with lms.Client(lmstudio_server.host) as client:
        image = client.files.prepare_image(PNG, name="dot.png")
        assert isinstance(image, lms.FileHandle)
        assert image.size_bytes == len(PNG)


# --- repository ----------------------------------------------------------------------------


async def test_search_arguments_are_checked(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(lms.LMStudioValueError, match="limit"):
        await client.repository.search_models("x", limit=0)
    with pytest.raises(lms.LMStudioValueError, match="compatibility"):
        await client.repository.search_models("x", compatibility_types=["exe"])  # type: ignore[list-item]
    with pytest.raises(lms.LMStudioValueError, match="compatibility_types must be a list"):
        await client.repository.search_models("x", compatibility_types=5)  # type: ignore[arg-type]
    assert lmstudio_server.received_frames(namespace="repository") == []


async def _downloaded(client: lms.AsyncClient) -> set[str]:
    """Model keys and paths of the downloaded models (a download option names a path)."""
    infos = await client.system.list_downloaded()
    return {m.model_key for m in infos} | {m.path for m in infos}


async def _a_new_model(client: lms.AsyncClient) -> tuple[lms.ModelSearchResult, lms.DownloadOption]:
    downloaded = await _downloaded(client)
    for result in await client.repository.search_models(limit=25):
        for option in await result.get_download_options():
            if option.info.indexed_model_identifier not in downloaded:
                return result, option
    raise AssertionError("the stand-in's hub offers nothing that is not downloaded")


@needs_hub
async def test_download_with_progress_then_load(client: lms.AsyncClient) -> None:
    _result, option = await _a_new_model(client)
    progress: list[lms.DownloadProgress] = []
    key = await option.download(on_progress=progress.append)
    assert progress
    assert option.info.indexed_model_identifier in await _downloaded(client)
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions)
    assert progress[-1].downloaded_bytes <= progress[-1].total_bytes
    assert key in {m.model_key for m in await client.system.list_downloaded()}
    async with client.llm.loaded(key) as model:
        assert model.model_key == key


@needs_hub
async def test_cancelling_a_download_cancels_it_on_the_server(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    _result, option = await _a_new_model(client)
    started = asyncio.Event()
    task = asyncio.create_task(option.download(on_progress=lambda _p: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = asyncio.get_running_loop().time() + 5
    while not any(c.endpoint == "downloadModel" for c in lmstudio_server.cancels()):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert option.info.indexed_model_identifier not in await _downloaded(client)


@needs_hub
def test_sync_download_reports_progress_in_the_calling_thread(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    import threading

    caller = threading.get_ident()
    threads: set[int] = set()
    with lms.Client(lmstudio_server.host) as client:
        results = client.repository.search_models(limit=25)
        assert all(isinstance(r, lms.SyncModelSearchResult) for r in results)
        infos = client.system.list_downloaded()
        downloaded = {m.model_key for m in infos} | {m.path for m in infos}
        option = next(
            o
            for r in results
            for o in r.get_download_options()
            if o.info.indexed_model_identifier not in downloaded
        )
        assert isinstance(option, lms.SyncDownloadOption)
        key = option.download(on_progress=lambda _p: threads.add(threading.get_ident()))
        assert threads == {caller}
        infos = client.system.list_downloaded()
        assert key in {m.model_key for m in infos}
        assert option.info.indexed_model_identifier in {m.path for m in infos}


@needs_hub
async def test_cli_get_downloads_with_progress(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with lms.AsyncClient(lmstudio_server.host) as client:
        result, option = await _a_new_model(client)
        code = await asyncio.to_thread(
            commands.main, ["--host", lmstudio_server.host, "get", result.name]
        )
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "Downloaded" in out.out
        assert "100%" in out.out  # the plain-text progress (not a terminal)
        assert option.info.indexed_model_identifier in await _downloaded(client)
    missing = await asyncio.to_thread(
        commands.main, ["--host", lmstudio_server.host, "get", "zz-no-such-model-zz"]
    )
    assert missing == 1


# --- speculative decoding, tokenizer markers -------------------------------------------------


async def _draft_checked(llm: lms.LLM) -> bool:
    try:
        await llm.respond("hi", config={"draft_model": "no-such-draft-model", "max_tokens": 1})
    except lms.DraftModelError:
        return True
    return False


async def test_draft_models(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    if not await _draft_checked(llm):
        pytest.skip("the stand-in does not check draft models yet")
    with pytest.raises(lms.DraftModelError) as info:
        await llm.respond("hi", config={"draft_model": "no-such-draft-model"})
    assert "no-such-draft-model" in str(info.value)
    result = await llm.respond("Tell me a story", config={"draft_model": SMOL})
    stats = result.stats
    assert stats.used_draft_model_key == SMOL
    assert stats.total_draft_tokens_count is not None
    assert stats.accepted_draft_tokens_count is not None
    assert stats.rejected_draft_tokens_count is not None
    assert (
        stats.accepted_draft_tokens_count + stats.rejected_draft_tokens_count
        <= stats.total_draft_tokens_count
    )


async def test_embedding_tokenize_includes_start_and_end_markers(client: lms.AsyncClient) -> None:
    embedder = await client.embedding.model(NOMIC)
    text = "Hello, world"
    tokens = await embedder.tokenize(text)
    count = await embedder.count_tokens(text)
    if len(tokens) == count:
        pytest.skip("the stand-in does not add the embedding markers yet")
    assert len(tokens) == count + 2
    batch: Any = await embedder.tokenize([text, text])
    assert batch == [tokens, tokens]


@needs_uploads
async def test_an_oversized_upload_is_refused_and_the_client_goes_on(
    client: lms.AsyncClient,
) -> None:
    big = PNG + bytes(11 * 1024 * 1024)  # over the stand-in's 10 MiB limit (docs/stand-in.md)
    with pytest.raises(lms.ServerError, match="limit"):
        await client.files.prepare_image(big, name="big.png")
    image = await client.files.prepare_image(PNG, name="dot.png")
    assert image.size_bytes == len(PNG)


async def test_a_model_key_with_its_publisher_finds_the_loaded_instance(
    client: lms.AsyncClient,
) -> None:
    plain = await client.llm.model(LLAMA)
    qualified = await client.llm.model(f"hugging-quants/{LLAMA}")
    assert qualified == plain
    assert [h.identifier for h in await client.llm.list_loaded()] == [LLAMA]
    assert await qualified.respond("Hi", config={"max_tokens": 2}) is not None
