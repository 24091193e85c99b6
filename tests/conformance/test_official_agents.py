"""The official ``lmstudio`` SDK's agent features against the stand-in: ``act`` with tools,
images, presets, draft models and downloads (async and sync clients)."""

from __future__ import annotations

import base64
import logging

import lmstudio
import pytest

from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.conformance

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"  # trainedForToolUse
VISION = "mobilevlm_v2-1.7b"
PNG_5X3 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAIAAADUVFKvAAAAFElEQVR42mNgYPjPQAxgYmAgAwAALPQBAd7E5RkAAAAASUVORK5CYII="
)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def divide(numerator: float, denominator: float) -> float:
    """Divide the numerator by the denominator."""
    return numerator / denominator


def test_sync_act_makes_real_tool_calls(lmstudio_server: ThreadedStandInServer) -> None:
    lmstudio_server.preload(QWEN)
    calls: list[tuple[str, object]] = []

    def traced_add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append(("add", (a, b)))
        return a + b

    with lmstudio.Client(lmstudio_server.host) as client:
        llm = client.llm.model(QWEN)
        chat = lmstudio.Chat()
        chat.add_user_message("What is the sum of 123 and 3210?")
        predictions: list[lmstudio.PredictionRoundResult] = []
        result = llm.act(
            chat,
            [traced_add],
            on_message=chat.append,
            on_prediction_completed=predictions.append,
        )
    assert calls == [("add", (123, 3210))]
    assert result.rounds == 2
    assert predictions[0].content == "Let me use the traced_add tool."
    assert predictions[-1].content == "The traced_add tool returned: 3333"
    assert predictions[0].stats.stop_reason == "toolCalls"
    roles = [m.role for m in chat._messages]
    assert roles == ["user", "assistant", "tool", "assistant"]


def test_sync_act_reports_a_failing_tool_back_to_the_model(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    lmstudio_server.preload(QWEN)
    failures: list[Exception] = []
    with lmstudio.Client(lmstudio_server.host) as client:
        llm = client.llm.model(QWEN)
        predictions: list[lmstudio.PredictionRoundResult] = []
        llm.act(
            "Use divide on 1 and 0, then add 2 and 5",
            [divide, add],
            handle_invalid_tool_request=lambda exc, _request: failures.append(exc),
            on_prediction_completed=predictions.append,
        )
    assert len(failures) == 1
    assert isinstance(failures[0].__cause__, ZeroDivisionError)
    answer = predictions[-1].content
    assert "The divide tool returned:" in answer
    assert "division by zero" in answer
    assert "The add tool returned: 7" in answer


async def test_async_act_with_parallel_tools(lmstudio_server: ThreadedStandInServer) -> None:
    lmstudio_server.preload(QWEN)

    async def multiply(x: float, y: float) -> float:
        """Multiply two numbers."""
        return x * y

    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        llm = await client.llm.model(QWEN)
        predictions: list[lmstudio.PredictionRoundResult] = []
        result = await llm.act(
            "multiply 6 by 7 and add 1 and 2",
            [multiply, add],
            on_prediction_completed=predictions.append,
            max_parallel_tool_calls=2,
        )
    assert result.rounds == 2
    assert predictions[-1].content == ("The multiply tool returned: 42.0\nThe add tool returned: 3")


def test_a_model_without_tool_training_answers_without_tools(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    lmstudio_server.preload(SMOL)
    with lmstudio.Client(lmstudio_server.host) as client:
        result = client.llm.model(SMOL).act("What is the sum of 1 and 2?", [add])
    assert result.rounds == 1


def test_sync_images_presets_and_drafts(
    lmstudio_server: ThreadedStandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for key in (VISION, LLAMA):
        lmstudio_server.preload(key)
    with lmstudio.Client(lmstudio_server.host) as client:
        image = client.files.prepare_image(PNG_5X3, name="tiny.png")
        assert image.file_type == "image"
        assert image.size_bytes == len(PNG_5X3)
        chat = lmstudio.Chat()
        chat.add_user_message("What is in this picture?", images=[image])
        reply = client.llm.model(VISION).respond(chat)
        assert reply.content.startswith("The image is a PNG image of 5x3 pixels. ")
        with pytest.raises(lmstudio.LMStudioServerError, match="does not support images"):
            client.llm.model(LLAMA).respond(chat)
        llm = client.llm.model(LLAMA)
        concise = llm.respond("Hello", preset="concise")
        assert concise.prediction_config.temperature == 0.3
        assert concise.stats.predicted_tokens_count <= 24
        with pytest.raises(lmstudio.LMStudioPresetNotFoundError):
            llm.respond("Hello", preset="no-such-preset")
        drafted = llm.respond("Hello", config={"draftModel": SMOL})
        assert drafted.stats.used_draft_model_key == SMOL
        assert drafted.stats.total_draft_tokens_count == drafted.stats.predicted_tokens_count
        with pytest.raises(lmstudio.LMStudioServerError, match="Draft model"):
            llm.respond("Hello", config={"draftModel": QWEN})


@pytest.mark.lmstudio_server(download_mb_per_second=4000)
async def test_async_repository_download_then_load(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        results = await client.repository.search_models("smollm2 360m")
        assert [r.search_result.name for r in results] == ["SmolLM2 360M Instruct"]
        options = await results[0].get_download_options()
        assert [o.info.quantization for o in options] == ["Q8_0", "Q4_K_M"]
        progress: list[lmstudio.DownloadProgressUpdate] = []
        key = await options[1].download(on_progress=progress.append)
        assert key == "smollm2-360m-instruct@q4_k_m"
        assert progress[-1].downloaded_bytes == progress[-1].total_bytes
        downloaded = [m.model_key for m in await client.list_downloaded_models("llm")]
        assert key in downloaded
        model = await client.llm.load_new_instance(key)
        assert model.identifier.startswith("smollm2-360m-instruct")


def test_sync_act_runs_dependent_steps_in_separate_rounds(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    lmstudio_server.preload(QWEN)

    def multiply(x: float, y: float) -> float:
        """Multiply two numbers."""
        return x * y

    with lmstudio.Client(lmstudio_server.host) as client:
        predictions: list[lmstudio.PredictionRoundResult] = []
        result = client.llm.model(QWEN).act(
            "Add 1 and 2, then multiply the result by 4",
            [add, multiply],
            on_prediction_completed=predictions.append,
        )
    assert result.rounds == 3
    assert [p.stats.stop_reason for p in predictions] == ["toolCalls", "toolCalls", "eosFound"]
    assert predictions[-1].content == ("The add tool returned: 3\nThe multiply tool returned: 12.0")
