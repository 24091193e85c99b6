"""Request translation shared by the HTTP interfaces: messages, sampling fields, usage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import _draft as drafting
from .. import _engine as engine
from .. import _errors as err
from .. import _files as files
from .. import _toolcalls as tc
from .._state import Instance, ModelState
from .common import Fields, HttpError

_PRED = "llm.prediction."
# Where an HTTP image's file part keeps what the image shows (an ``ImageInfo``).
IMAGE_KEY = "image"
_DATA_URL = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.S)
_EXTENSIONS = {"image/jpeg": "jpg", "image/svg+xml": "svg"}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_ROLES["tool"] = "tool"
MAX_STORED_CHATS = 1000


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(url: Any, where: str) -> dict[str, Any]:
    """A base64 data URL image as a ChatHistoryData file part, checked as an upload is.

    The part carries what the image shows (``IMAGE_KEY``) instead of naming a file in the
    shared upload store, so a stored conversation keeps its images for as long as it is
    stored, and no request's images push out another's.
    """
    from .common import from_standin

    match = _DATA_URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise HttpError(
            400,
            f"'{where}' must be a base64 data URL (data:image/...;base64,...); the stand-in "
            "does not fetch images from the network",
            param=where,
            code="invalid_value",
        )
    mime, payload = match.groups()
    subtype = mime.split("/", 1)[1]
    name = f"image.{_EXTENSIONS.get(mime, subtype)}"
    try:
        data, image = files.read_upload(name, payload.strip())
    except err.StandInError as exc:
        problem = from_standin(exc)
        problem.param = where
        raise problem from None
    if image is None:
        raise HttpError(
            400, f"'{where}' is not a readable image", param=where, code="invalid_value"
        )
    return {
        "type": "file",
        "name": name,
        "fileType": "image",
        "sizeBytes": len(data),
        IMAGE_KEY: image,
    }


def _image_url(part: dict[str, Any]) -> Any:
    url = part.get("image_url")
    if isinstance(url, dict):
        return url.get("url")
    return url if url is not None else part.get("data_url")


def _content_parts(value: Any, where: str, images: bool = False) -> list[dict[str, Any]]:
    """OpenAI message content (a string or an array of parts) as ChatHistoryData parts;
    image parts only with ``images``."""
    if isinstance(value, str):
        return [text_part(value)]
    if not isinstance(value, list):
        raise HttpError(
            400,
            f"'{where}.content' must be a string or an array of content parts",
            param=f"{where}.content",
            code="invalid_type",
        )
    parts: list[dict[str, Any]] = []
    for n, part in enumerate(value):
        here = f"{where}.content[{n}]"
        if not isinstance(part, dict):
            raise HttpError(400, f"'{here}' must be an object", param=here, code="invalid_type")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise HttpError(
                    400,
                    f"'{here}.text' must be a string",
                    param=f"{here}.text",
                    code="invalid_type",
                )
            parts.append(text_part(text))
        elif kind in ("image_url", "input_image", "image") and images:
            # a file part, so the engine sees it as an upload over the WebSocket API
            parts.append(image_part(_image_url(part), f"{here}.image_url"))
        else:
            raise HttpError(
                400,
                f"'{here}.type' {kind!r} is not supported (use 'text' or 'image_url')",
                param=f"{here}.type",
                code="invalid_value",
            )
    return parts


def _tool_call_parts(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise HttpError(400, f"'{where}' must be an array", param=where, code="invalid_type")
    parts: list[dict[str, Any]] = []
    for n, call in enumerate(value):
        here = f"{where}[{n}]"
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise HttpError(
                400,
                f"'{here}.function.name' must be a non-empty string",
                param=f"{here}.function.name",
                code="invalid_value",
            )
        assert isinstance(fn, dict)
        assert isinstance(call, dict)
        arguments = fn.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = msgspec.json.decode(arguments or "{}")
            except (msgspec.DecodeError, RecursionError):
                raise HttpError(
                    400,
                    f"'{here}.function.arguments' is not valid JSON",
                    param=f"{here}.function.arguments",
                    code="invalid_value",
                ) from None
        if not isinstance(arguments, dict):
            raise HttpError(
                400,
                f"'{here}.function.arguments' must encode a JSON object",
                param=f"{here}.function.arguments",
                code="invalid_value",
            )
        request: dict[str, Any] = {"type": "function", "name": name, "arguments": arguments}
        if isinstance(call.get("id"), str):
            request["id"] = call["id"]
        parts.append({"type": "toolCallRequest", "toolCallRequest": request})
    return parts


def history_from_messages(
    value: Any, where: str = "messages", images: bool = False
) -> list[dict[str, Any]]:
    """OpenAI chat messages as ChatHistoryData messages (what the WebSocket API receives);
    image content parts only with ``images``."""
    if not isinstance(value, list):
        raise HttpError(400, f"'{where}' must be an array", param=where, code="invalid_type")
    if not value:
        raise HttpError(400, f"'{where}' must not be empty", param=where, code="invalid_value")
    messages: list[dict[str, Any]] = []
    for index, raw in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(raw, dict):
            raise HttpError(400, f"'{here}' must be an object", param=here, code="invalid_type")
        given = raw.get("role")
        role = _ROLES.get(given) if isinstance(given, str) else None
        if role is None:
            raise HttpError(
                400,
                f"'{here}.role' must be one of 'system', 'developer', 'user', 'assistant', "
                f"'tool', got {given!r}",
                param=f"{here}.role",
                code="invalid_value",
            )
        content = raw.get("content")
        parts: list[dict[str, Any]] = []
        if role == "tool":
            if not isinstance(content, str):
                content = _joined_text(_content_parts(content, here))
            result: dict[str, Any] = {"type": "toolCallResult", "content": content}
            if isinstance(raw.get("tool_call_id"), str):
                result["toolCallId"] = raw["tool_call_id"]
            parts.append(result)
        else:
            if content is not None or role != "assistant":
                parts.extend(_content_parts(content, here, images))
            if role == "assistant" and raw.get("tool_calls") is not None:
                parts.extend(_tool_call_parts(raw["tool_calls"], f"{here}.tool_calls"))
        messages.append({"role": role, "content": parts})
    return messages


def _joined_text(parts: list[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts)


def sampling_fields(fields: Fields, *, max_tokens: tuple[str, ...]) -> dict[str, Any]:
    """``llm.prediction.*`` keys from the sampling fields the HTTP interfaces share."""
    out: dict[str, Any] = {}
    temperature = fields.number("temperature", minimum=0)
    if temperature is not None:
        out[_PRED + "temperature"] = temperature
    top_p = fields.number("top_p", minimum=0, maximum=1)
    if top_p is not None:
        out[_PRED + "topPSampling"] = {"checked": True, "value": top_p}
    top_k = fields.integer("top_k", minimum=-1)
    if top_k is not None:
        out[_PRED + "topKSampling"] = top_k
    min_p = fields.number("min_p", minimum=0, maximum=1)
    if min_p is not None:
        out[_PRED + "minPSampling"] = {"checked": True, "value": min_p}
    repeat = fields.number("repeat_penalty", minimum=0)
    if repeat is not None:
        out[_PRED + "repeatPenalty"] = {"checked": True, "value": repeat}
    for name in max_tokens:
        limit = fields.integer(name, minimum=-1)
        if limit is not None:
            out[_PRED + "maxPredictedTokens"] = {"checked": limit >= 0, "value": limit}
    # Accepted for compatibility; generation is deterministic without them.
    fields.integer("seed")
    fields.number("presence_penalty", minimum=-2, maximum=2)
    fields.number("frequency_penalty", minimum=-2, maximum=2)
    fields.obj("logit_bias")
    return out


def stop_field(fields: Fields) -> list[str] | None:
    stop = fields.raw("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(x, str) for x in stop):
        return list(stop)
    raise fields.bad("stop", "a string or an array of strings", stop)


def response_format_fields(fields: Fields) -> dict[str, Any]:
    """``response_format`` (``text`` or ``json_schema``) as ``llm.prediction.structured``."""
    fmt = fields.obj("response_format")
    if fmt is None:
        return {}
    kind = fmt.string("type", required=True)
    if kind == "text":
        return {}
    if kind != "json_schema":
        raise HttpError(
            400,
            "'response_format.type' must be 'json_schema' or 'text'",
            param="response_format.type",
            code="invalid_value",
        )
    spec = fmt.obj("json_schema")
    if spec is None:
        raise fmt.missing("json_schema")
    schema = spec.raw("schema", required=True)
    if not isinstance(schema, dict):
        raise spec.bad("schema", "an object", schema)
    return {_PRED + "structured": {"type": "json", "jsonSchema": schema}}


def image_lead(inst: Instance, history: dict[str, Any]) -> str:
    """What the model says first about the history's images (as over WebSocket); a model
    without vision refuses them."""
    from .common import from_standin

    images = [
        part[IMAGE_KEY]
        for message in history.get("messages", [])
        for part in message.get("content", [])
        if part.get("type") == "file" and isinstance(part.get(IMAGE_KEY), files.ImageInfo)
    ]
    if images and not inst.model.get("vision"):
        raise from_standin(files.vision_not_supported(inst.model_key))
    return files.describe_images(images)


def resolve_config(inst: Instance, received: dict[str, Any]) -> dict[str, Any]:
    from .. import _errors as err
    from .common import from_standin

    try:
        return engine.resolve_config(inst, received)
    except err.StandInError as exc:
        raise from_standin(exc) from None


# --- speculative decoding ------------------------------------------------------------------------


def draft_field(fields: Fields) -> str | None:
    """The request's ``draft_model`` (LM Studio's API changelog, 0.3.10); an empty one
    means no draft, as an empty ``draftModel`` does over WebSocket."""
    return fields.string("draft_model", empty=True) or None


def draft_key(state: ModelState, model: dict[str, Any], draft: str | None) -> str | None:
    """The model key of ``draft`` when it may draft for ``model`` (the WebSocket API's rule,
    ``_draft.check_draft``); a 400 naming ``draft_model`` when it may not."""
    if draft is None:
        return None
    try:
        return str(drafting.check_draft(state, model, draft)["modelKey"])
    except err.StandInError as exc:
        found = (exc.display_data or {}).get("code") != "generic.draftModelNotFound"
        raise HttpError(
            400,
            exc.title if exc.cause is None else f"{exc.title}: {exc.cause}",
            param="draft_model",
            code="draft_model_incompatible" if found else "draft_model_not_found",
        ) from None


def check_draft_early(state: ModelState, name: str, draft: str | None) -> None:
    """Refuse a draft that cannot be used before the main model ``name`` is loaded just in
    time for nothing (the check is repeated on the instance the request then runs on)."""
    if draft is None:
        return
    inst = state.find_by_query({"identifier": name}, "llm")
    if inst is not None:
        draft_key(state, inst.model, draft)
        return
    try:
        model, _ = state.resolve_downloaded(name, "llm")
    except err.StandInError:
        return  # the request fails on its model anyway
    draft_key(state, model, draft)


def draft_stats(outcome: engine.Outcome) -> dict[str, Any]:
    """The draft fields of LM Studio's REST ``stats``; empty without a draft."""
    stats = outcome.stats
    if "usedDraftModelKey" not in stats:
        return {}
    return {
        "draft_model": stats["usedDraftModelKey"],
        "total_draft_tokens_count": stats["totalDraftTokensCount"],
        "accepted_draft_tokens_count": stats["acceptedDraftTokensCount"],
        "rejected_draft_tokens_count": stats["rejectedDraftTokensCount"],
        "ignored_draft_tokens_count": stats["ignoredDraftTokensCount"],
    }


def finish_reason(stop_reason: str) -> str:
    if stop_reason in ("maxPredictedTokensReached", "contextLengthReached"):
        return "length"
    return "stop"


def usage(outcome: engine.Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.predicted_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.predicted_tokens,
    }


def store_chat(chats: dict[str, list[dict[str, Any]]], key: str, messages: list[Any]) -> None:
    chats[key] = messages
    while len(chats) > MAX_STORED_CHATS:
        chats.pop(next(iter(chats)))


# --- tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """A request's tools: ``setting`` is ``llm.prediction.tools``; ``required`` when
    ``tool_choice`` says the model must call one (``"required"``, or a named function, to
    which ``setting`` is then narrowed)."""

    setting: dict[str, Any]
    required: bool = False


def _chosen_function(fields: Fields) -> str | None:
    """The name of a ``tool_choice`` ``{"type": "function", "function": {"name"}}``."""
    choice = fields.obj("tool_choice")
    if choice is None:
        return None
    function = choice.obj("function")
    if function is None:
        raise choice.missing("function")
    return function.string("name", required=True)


def tool_fields(fields: Fields, received: dict[str, Any]) -> Tools | None:
    """OpenAI ``tools`` (function tools) and ``tool_choice``; ``None`` without tools or with
    ``tool_choice: "none"``. ``received`` (the prediction keys read so far) must not ask for
    structured output when a tool call is required: the two would contradict."""
    tools = fields.array("tools")
    choice = fields.raw("tool_choice")
    if (
        choice is not None
        and choice not in ("none", "auto", "required")
        and not (isinstance(choice, dict) and choice.get("type") == "function")
    ):
        raise HttpError(
            400,
            "'tool_choice' must be 'none', 'auto', 'required' or a function choice",
            param="tool_choice",
            code="invalid_value",
        )
    chosen = _chosen_function(fields) if isinstance(choice, dict) else None
    if not tools and (choice == "required" or chosen is not None):
        # (a guess, as OpenAI answers: a call cannot be required of no tools)
        raise HttpError(
            400,
            "'tool_choice' requires a tool call, but 'tools' offers none",
            param="tool_choice",
            code="invalid_value",
        )
    if not tools or choice == "none":
        return None
    converted: list[dict[str, Any]] = []
    for n, tool in enumerate(tools):
        here = f"tools[{n}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise HttpError(
                400,
                f"'{here}.type' must be 'function'",
                param=f"{here}.type",
                code="invalid_value",
            )
        fn = Fields(tool, f"{here}.").obj("function")
        if fn is None:
            raise Fields(tool, f"{here}.").missing("function")
        name = fn.string("name", required=True)
        params = fn.obj("parameters")
        function: dict[str, Any] = {
            "name": name,
            "parameters": params.data if params is not None else {"type": "object"},
        }
        description = fn.string("description", empty=True)
        if description is not None:
            function["description"] = description
        converted.append({"type": "function", "function": function})
    if chosen is not None:
        converted = [t for t in converted if t["function"]["name"] == chosen]
        if not converted:
            raise HttpError(
                400,
                f"'tool_choice.function.name' names no tool in 'tools': {chosen!r}",
                param="tool_choice.function.name",
                code="invalid_value",
            )
    required = choice == "required" or chosen is not None
    if required and _PRED + "structured" in received:
        raise HttpError(
            400,
            "'tool_choice' cannot require a tool call together with a 'response_format' "
            "schema",
            param="tool_choice",
            code="invalid_value",
        )
    return Tools({"type": "toolArray", "tools": converted}, required)


def tool_round(
    inst: Instance, config: dict[str, Any], history: dict[str, Any], tools: Tools | None
) -> tc.ToolRound | None:
    """What the model does about tools this round: the usual rule (``engine.tool_round``),
    or, when the request requires a tool call and the model runs on llama.cpp (GGUF), a
    round that calls one (``tc.forced_tool_round``)."""
    messages = tc.messages_from_history(history)
    if tools is None or not tools.required or inst.model.get("format") != "gguf":
        return engine.tool_round(inst, config, messages)
    return tc.forced_tool_round(messages, tc.tools_from_setting(tools.setting))


def tool_call_json(request: dict[str, Any], index: int) -> dict[str, Any]:
    """An engine ``toolCallRequest`` as an OpenAI ``tool_calls`` entry."""
    return {
        "id": str(request.get("id") or f"call_{index}"),
        "type": "function",
        "function": {
            "name": str(request["name"]),
            # spelled as the streamed argument fragments spell it
            "arguments": json.dumps(request.get("arguments", {}), ensure_ascii=False),
        },
    }


def assistant_message(
    outcome: engine.Outcome, calls: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The OpenAI assistant message and finish reason for a finished prediction."""
    if outcome.stop_reason != "toolCalls" or not calls:
        return {"role": "assistant", "content": outcome.text}, finish_reason(outcome.stop_reason)
    message = {
        "role": "assistant",
        "content": outcome.text or None,
        "tool_calls": [tool_call_json(call, n) for n, call in enumerate(calls)],
    }
    return message, "tool_calls"
