"""LM Studio's REST API v0 (``/api/v0/...``): model listing with load state, plus inference
endpoints that answer like the OpenAI-compatible ones with LM Studio's extra fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .common import HttpError, json_response

if TYPE_CHECKING:
    from .._server import Runtime


def _entry(model: dict[str, Any], loaded_ctx: int | None) -> dict[str, Any]:
    kind = "vlm" if model.get("vision") else "llm"
    if model["type"] == "embedding":
        kind = "embeddings"
    quant = model.get("quantization") or {}
    entry: dict[str, Any] = {
        "id": model["modelKey"],
        "object": "model",
        "type": kind,
        "publisher": model.get("publisher", ""),
        "arch": model.get("architecture", ""),
        "compatibility_type": model.get("format", ""),
        "quantization": quant.get("name", ""),
        "state": "loaded" if loaded_ctx is not None else "not-loaded",
        "max_context_length": model["maxContextLength"],
    }
    if loaded_ctx is not None:
        entry["loaded_context_length"] = loaded_ctx
    if model.get("trainedForToolUse"):
        entry["capabilities"] = ["tool_use"]
    return entry


def _loaded_context(rt: Runtime) -> dict[str, int]:
    """Model key (lower case) -> context length of its first loaded instance."""
    out: dict[str, int] = {}
    for inst in rt.state.loaded():
        out.setdefault(inst.model_key.lower(), inst.context_length)
    return out


async def list_models(rt: Runtime, _request: web.Request) -> web.Response:
    loaded = _loaded_context(rt)
    data = [_entry(m, loaded.get(str(m["modelKey"]).lower())) for m in rt.state.catalog]
    return json_response({"object": "list", "data": data})


async def get_model(rt: Runtime, request: web.Request) -> web.Response:
    name = request.match_info["model"]
    low = name.lower()
    state = rt.state
    model = next((m for m in state.catalog if str(m["modelKey"]).lower() == low), None)
    if model is None:
        inst = next((i for i in state.loaded() if i.identifier.lower() == low), None)
        model = inst.model if inst is not None else None
    if model is None:
        raise HttpError(
            404,
            f'Model "{name}" not found. Please specify a valid model.',
            param="model",
            code="model_not_found",
            kind="model_not_found",
        )
    loaded = _loaded_context(rt)
    return json_response(_entry(model, loaded.get(str(model["modelKey"]).lower())))
