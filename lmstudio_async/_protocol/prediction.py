"""Payloads of the inference endpoints (protocol.md §4.11, §7.5): pure, no I/O.

* :class:`PredictionConfig`: typed sampling / output settings, validated on
  construction like the load configs, and their KV-stack form on the wire.
* :class:`Chat` / :class:`ChatMessage`: a small typed chat history, and the
  ``ChatHistoryData`` it becomes on the wire.
* The ``predict`` / ``completeRawText`` channel packets (:class:`Fragment`,
  prompt-processing progress, ``success``), :class:`PredictionStats` and
  :class:`PredictionResult`.
* Request parameters of ``tokenize``, ``countTokens``, ``applyPromptTemplate``
  and ``embedString``.

Mapping choices: checkbox keys (``maxPredictedTokens``, ``topPSampling``,
``minPSampling``, ``repeatPenalty``) are written ``{"checked": true, "value": v}``
when set and omitted when unset, as for load configs. ``json_schema`` becomes
``llm.prediction.structured = {"type": "json", "jsonSchema": schema}``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, TypeAlias

import msgspec
import msgspec.structs

from lmstudio_async._protocol.files import FileHandle
from lmstudio_async._protocol.info import LlmInstanceInfo
from lmstudio_async._protocol.kvconfig import (
    API_OVERRIDE_LAYER,
    KvConfig,
    KvField,
    _camel,
    _iter_fields,
    _plain,
    _read_checkbox,
    convert_config,
    fields_to_load_config,
)
from lmstudio_async._protocol.tools import (
    ResponseFormat,
    ToolCallRequest,
    ToolCallResult,
    ToolSet,
    encode_tool_result,
)
from lmstudio_async.config import ConfigBase, LlmLoadConfig, is_number
from lmstudio_async.errors import ConfigError, LMStudioValueError

__all__ = [
    "PREDICTION_PACKET_DECODER",
    "Chat",
    "ChatInput",
    "ChatMessage",
    "ContextOverflowPolicy",
    "EmbeddingReply",
    "FormattedReply",
    "Fragment",
    "FragmentPacket",
    "PredictionConfig",
    "PredictionPacket",
    "PredictionResult",
    "PredictionRoundResult",
    "PredictionStats",
    "PredictionSuccess",
    "PromptProcessingProgress",
    "ReasoningType",
    "Role",
    "StopReason",
    "TokenCountReply",
    "TokensReply",
    "apply_template_param",
    "coerce_chat",
    "coerce_prediction_config",
    "complete_creation",
    "embed_param",
    "fields_to_prediction_config",
    "predict_creation",
    "prediction_config_stack",
    "prediction_config_to_fields",
    "result_from_success",
    "tokenize_param",
]

ContextOverflowPolicy: TypeAlias = Literal["stopAtLimit", "truncateMiddle", "rollingWindow"]
"""What LM Studio does when the conversation outgrows the context window."""

StopReason: TypeAlias = Literal[
    "userStopped",
    "modelUnloaded",
    "failed",
    "eosFound",
    "stopStringFound",
    "toolCalls",
    "maxPredictedTokensReached",
    "contextLengthReached",
]
"""Why a prediction ended (``PredictionStats.stop_reason`` is kept as ``str`` so that
values added by future LM Studio releases still decode)."""

ReasoningType: TypeAlias = Literal["none", "reasoning", "reasoningStartTag", "reasoningEndTag"]
"""Whether a fragment is part of the model's reasoning (``Fragment.reasoning_type``)."""

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
"""Role of a :class:`ChatMessage`."""

_POLICIES: tuple[str, ...] = ("stopAtLimit", "truncateMiddle", "rollingWindow")
_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


# ---------------------------------------------------------------------------
# PredictionConfig


class PredictionConfig(
    ConfigBase, frozen=True, kw_only=True, forbid_unknown_fields=True, repr_omit_defaults=True
):
    """How to predict. Unset (``None``) fields are left to the server (the model's defaults).

    Values are checked on construction; a bad one raises
    :class:`~lmstudio_async.ConfigError` naming the field::

        PredictionConfig(max_tokens=200, temperature=0.2, stop_strings=["\\n\\n"])
        PredictionConfig(json_schema={"type": "object", "properties": {...}})

    ``respond``/``complete`` also take a dict of the same fields (snake_case, camelCase,
    or the official SDKs' names such as ``maxTokens`` / ``topPSampling`` /
    ``structured``).
    """

    domain: ClassVar[Literal["llm", "embedding"]] = "llm"
    _kind: ClassVar[str] = "prediction config"

    max_tokens: int | None = None
    """Most tokens to generate (>= 1); ``None``: the server's default (no limit)."""
    temperature: float | None = None
    """Sampling temperature (>= 0; 0 is greedy)."""
    top_k: int | None = None
    """Top-k sampling (>= 0)."""
    top_p: float | None = None
    """Top-p (nucleus) sampling, in ``[0, 1]``."""
    min_p: float | None = None
    """Min-p sampling, in ``[0, 1]``."""
    repeat_penalty: float | None = None
    """Repetition penalty (>= 0; 1 means none)."""
    stop_strings: tuple[str, ...] | None = None
    """Stop generating when one of these (non-empty) strings is produced."""
    tool_call_stop_strings: tuple[str, ...] | None = None
    """Stop strings that end a tool call."""
    context_overflow_policy: ContextOverflowPolicy | None = None
    """``"stopAtLimit"``, ``"truncateMiddle"`` or ``"rollingWindow"``."""
    json_schema: dict[str, Any] | None = None
    """Structured output: the reply is JSON matching this JSON schema. Also accepts a
    ``msgspec.Struct`` class, a dataclass or a TypedDict (its ``msgspec.json.schema``).
    Mapping aliases: ``response_format``, ``structured`` (``{"type": "json",
    "jsonSchema": ...}``)."""
    cpu_threads: int | None = None
    """CPU threads to use (>= 1)."""
    draft_model: str | None = None
    """Model key of a draft model for speculative decoding."""
    grammar: str | None = None
    """Structured output with a GBNF grammar (llama.cpp models): the reply follows it.
    Not together with ``json_schema``. Mapping alias: ``structured`` (``{"type": "gbnf",
    "gbnfGrammar": ...}``)."""

    def __post_init__(self) -> None:
        self._check_int("max_tokens", 1)
        self._check_number("temperature", 0.0)
        self._check_int("top_k", 0)
        self._check_ratio("top_p")
        self._check_ratio("min_p")
        self._check_number("repeat_penalty", 0.0)
        self._check_strings("stop_strings")
        self._check_strings("tool_call_stop_strings")
        self._check_choice("context_overflow_policy", _POLICIES)
        self._check_int("cpu_threads", 1)
        if self.draft_model is not None and not (
            isinstance(self.draft_model, str) and self.draft_model
        ):
            raise self._fail("draft_model", "a non-empty model key", self.draft_model)
        self._check_schema()
        if self.grammar is not None:
            if not (isinstance(self.grammar, str) and self.grammar.strip()):
                raise self._fail("grammar", "a non-empty GBNF grammar", self.grammar)
            if self.json_schema is not None:
                raise ConfigError(
                    "PredictionConfig: json_schema and grammar both ask for structured "
                    "output; give only one",
                    field="grammar",
                )
        for field in ("temperature", "top_p", "min_p", "repeat_penalty"):
            value = getattr(self, field)
            if type(value) is int:  # one wire form per value: 0 and 0.0 are the same setting
                msgspec.structs.force_setattr(self, field, float(value))

    def _check_ratio(self, field: str) -> None:
        value = getattr(self, field)
        if value is not None and not (
            is_number(value) and math.isfinite(value) and 0.0 <= value <= 1.0
        ):
            raise self._fail(field, "a number in [0, 1]", value)

    def _check_strings(self, field: str) -> None:
        value = getattr(self, field)
        if value is None:
            return
        if isinstance(value, str):
            raise self._fail(field, "a list of strings (not a single string)", value)
        if isinstance(value, list):
            value = tuple(value)
            msgspec.structs.force_setattr(self, field, value)
        if not (isinstance(value, tuple) and all(isinstance(s, str) and s for s in value)):
            raise self._fail(field, "a list of non-empty strings", value)

    def _check_schema(self) -> None:
        value: Any = self.json_schema
        if value is None:
            return
        if isinstance(value, type):
            try:
                value = _inline_root(msgspec.json.schema(value))
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"PredictionConfig.json_schema: cannot derive a JSON schema from "
                    f"{value.__name__}: {exc}",
                    field="json_schema",
                ) from None
        elif isinstance(value, Mapping):
            value = dict(value)
        else:
            raise self._fail(
                "json_schema",
                "a JSON schema (dict) or a Struct / dataclass / TypedDict class",
                value,
            )
        try:
            msgspec.json.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(
                f"PredictionConfig.json_schema: not JSON-serializable: {exc}", field="json_schema"
            ) from None
        msgspec.structs.force_setattr(self, "json_schema", value)


def _inline_root(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's ``{"$ref": "#/$defs/X", "$defs": ...}`` -> X's schema at the top level."""
    ref, defs = schema.get("$ref"), schema.get("$defs")
    if not (isinstance(ref, str) and ref.startswith("#/$defs/") and isinstance(defs, dict)):
        return schema
    root = dict(defs[ref.removeprefix("#/$defs/")])
    if len(defs) > 1:
        root["$defs"] = defs
    return root


# (client field, server key, is checkbox), in the order fields are written.
_KEYS: Final[tuple[tuple[str, str, bool], ...]] = (
    ("max_tokens", "llm.prediction.maxPredictedTokens", True),
    ("temperature", "llm.prediction.temperature", False),
    ("top_k", "llm.prediction.topKSampling", False),
    ("top_p", "llm.prediction.topPSampling", True),
    ("min_p", "llm.prediction.minPSampling", True),
    ("repeat_penalty", "llm.prediction.repeatPenalty", True),
    ("stop_strings", "llm.prediction.stopStrings", False),
    ("tool_call_stop_strings", "llm.prediction.toolCallStopStrings", False),
    ("context_overflow_policy", "llm.prediction.contextOverflowPolicy", False),
    ("json_schema", "llm.prediction.structured", False),
    ("cpu_threads", "llm.prediction.llama.cpuThreads", False),
    ("draft_model", "llm.prediction.speculativeDecoding.draftModel", False),
)
_STRUCTURED_KEY: Final = "llm.prediction.structured"
_TOOLS_KEY: Final = "llm.prediction.tools"

_FIELDS: Final = tuple(PredictionConfig.__struct_fields__)
_EXTRA_ALIASES: Final = {
    "maxPredictedTokens": "max_tokens",
    "max_predicted_tokens": "max_tokens",
    "topKSampling": "top_k",
    "top_k_sampling": "top_k",
    "topPSampling": "top_p",
    "top_p_sampling": "top_p",
    "minPSampling": "min_p",
    "min_p_sampling": "min_p",
    "response_format": "json_schema",
    "responseFormat": "json_schema",
}
_ALIASES: Final = {
    **{name: name for name in _FIELDS},
    **{_camel(name): name for name in _FIELDS},
    **_EXTRA_ALIASES,
}
_PATH_RE = re.compile(r" - at `\$\.(\w+)")


def _unknown(key: str) -> ConfigError:
    return PredictionConfig._unknown_field(key)


def _structured_field(value: Any) -> tuple[str, Any]:
    """The official SDKs' ``structured`` setting -> (our field, its value): ``json_schema``
    or ``grammar`` (value None for ``{"type": "none"}``)."""
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "none":
        return "json_schema", None
    if kind == "json" and "jsonSchema" in value:
        return "json_schema", value["jsonSchema"]
    if kind == "gbnf" and "gbnfGrammar" in value:
        return "grammar", value["gbnfGrammar"]
    raise ConfigError(
        "prediction config field 'structured' must be {'type': 'json', 'jsonSchema': {...}}, "
        f"{{'type': 'gbnf', 'gbnfGrammar': '...'}} or {{'type': 'none'}}, got {value!r}; or "
        "pass 'json_schema' / 'grammar'",
        field="structured",
    )


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"prediction config keys must be strings, got {key!r}", field=None)
        if key == "structured":
            name, value = _structured_field(value)
        else:
            found = _ALIASES.get(key)
            if found is None:
                raise _unknown(key)
            name = found
        if name in origin:
            raise ConfigError(
                f"prediction config field {name!r} given twice (as {origin[name]!r} and {key!r})",
                field=name,
            )
        origin[name] = key
        if value is not None:
            out[name] = value
    return out


def coerce_prediction_config(config: object) -> PredictionConfig | None:
    """Validate a user-supplied prediction config: ``None``, a :class:`PredictionConfig`,
    or a mapping of its fields (also camelCase and the official SDKs' names).

    Unknown, ill-typed or out-of-range fields raise :class:`ConfigError` naming the
    field, before anything is sent.
    """
    if config is None or isinstance(config, PredictionConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(
            "prediction config must be PredictionConfig, a mapping or None, "
            f"got {type(config).__name__}",
            field=None,
        )
    values = _normalise(config)
    # Classes are not JSON: let the constructor turn them into a schema.
    schema = values.pop("json_schema", None)
    converted = convert_config(values, PredictionConfig)
    if schema is not None:
        converted = PredictionConfig(**converted.to_dict(), json_schema=schema)
    return converted


def prediction_config_to_fields(config: object) -> list[KvField]:
    """The KV fields for the set fields of ``config`` (after :func:`coerce_prediction_config`)."""
    coerced = coerce_prediction_config(config)
    if coerced is None:
        return []
    fields: list[KvField] = []
    for name, key, checkbox in _KEYS:
        value = getattr(coerced, name)
        if value is None:
            continue
        if key == _STRUCTURED_KEY:
            value = {"type": "json", "jsonSchema": value}
        value = _plain(value)
        fields.append(
            KvField(key=key, value={"checked": True, "value": value} if checkbox else value)
        )
    if coerced.grammar is not None:
        fields.append(
            KvField(key=_STRUCTURED_KEY, value={"type": "gbnf", "gbnfGrammar": coerced.grammar})
        )
    return fields


def prediction_config_stack(config: object) -> dict[str, Any]:
    """The wire ``predictionConfigStack``: one ``apiOverride`` layer (possibly empty)."""
    fields = prediction_config_to_fields(config)
    return {
        "layers": [
            {
                "layerName": API_OVERRIDE_LAYER,
                "config": {"fields": [{"key": f.key, "value": f.value} for f in fields]},
            }
        ]
    }


def fields_to_prediction_config(
    fields: KvConfig | Mapping[str, Any] | Iterable[Any],
) -> PredictionConfig:
    """Map KV fields (e.g. ``success.predictionConfig``) back to a :class:`PredictionConfig`.

    Unknown keys, malformed or out-of-range values and unchecked checkboxes are skipped
    (the field stays ``None``).
    """
    by_key = {key: (name, checkbox) for name, key, checkbox in _KEYS}
    collapsed = dict(_iter_fields(fields))
    values: dict[str, Any] = {}
    for key, raw in collapsed.items():
        entry = by_key.get(key)
        if entry is None:
            continue
        name, checkbox = entry
        if checkbox:
            usable, raw = _read_checkbox(raw)
            if not usable:
                continue
        if key == _STRUCTURED_KEY:
            kind = raw.get("type") if isinstance(raw, Mapping) else None
            if kind == "gbnf" and isinstance(raw.get("gbnfGrammar"), str):
                name, raw = "grammar", raw["gbnfGrammar"]
            elif kind == "json":
                raw = raw.get("jsonSchema")
            else:
                continue
        if raw is None:
            continue
        try:
            values[name] = getattr(PredictionConfig(**{name: raw}), name)
        except (ConfigError, TypeError):
            continue
    return PredictionConfig(**values)


# ---------------------------------------------------------------------------
# Chat history


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a :class:`Chat`.

    ``role`` is system, user, assistant or tool; ``content`` its text. A user message may
    carry ``images`` (:class:`FileHandle`), an assistant message the ``tool_calls`` it made,
    a tool message the ``tool_results`` it returns.
    """

    role: Role
    content: str = ""
    images: tuple[FileHandle, ...] = ()
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_results: tuple[ToolCallResult, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise LMStudioValueError(
                "chat message role must be 'system', 'user', 'assistant' or 'tool', "
                f"got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise LMStudioValueError(
                f"chat message content must be a string, got {type(self.content).__name__}"
            )
        for name, kind, role in (
            ("images", FileHandle, "user"),
            ("tool_calls", ToolCallRequest, "assistant"),
            ("tool_results", ToolCallResult, "tool"),
        ):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                msgspec.structs.force_setattr(self, name, value)
            if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
                raise LMStudioValueError(
                    f"chat message {name} must be a list of {kind.__name__}, got {value!r}"
                )
            if value and self.role != role:
                raise LMStudioValueError(f"only {role} messages carry {name}, not {self.role}")
        if self.role == "tool" and not self.tool_results:
            raise LMStudioValueError("a tool message needs at least one tool result")

    def to_wire(self) -> dict[str, Any]:
        """The wire message: ``{"role": ..., "content": [parts]}``."""
        parts: list[dict[str, Any]] = []
        if self.role == "tool":
            parts.extend(r.to_wire() for r in self.tool_results)
        else:
            if self.content or not (self.images or self.tool_calls):
                parts.append({"type": "text", "text": self.content})
            parts.extend(i.to_wire() for i in self.images)
            parts.extend(
                {"type": "toolCallRequest", "toolCallRequest": c.to_wire()} for c in self.tool_calls
            )
        return {"role": self.role, "content": parts}


_PART_DECODERS: Final = {
    "toolCallRequest": msgspec.json.Decoder(ToolCallRequest),
}


def _message_from_wire(index: int, raw: object) -> ChatMessage:
    """A :class:`ChatMessage` from the official SDKs' chat history message shape."""
    if not isinstance(raw, Mapping):
        raise LMStudioValueError(f"chat message {index} must be a dict, got {type(raw).__name__}")
    role, content = raw.get("role"), raw.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise LMStudioValueError(
            f"chat message {index}: content must be a string or a list of parts, got "
            f"{type(content).__name__}"
        )
    texts: list[str] = []
    images: list[FileHandle] = []
    calls: list[ToolCallRequest] = []
    results: list[ToolCallResult] = []
    for number, part in enumerate(content):
        where = f"chat message {index}, part {number}"
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, Mapping):
            raise LMStudioValueError(f"{where} must be a dict, got {type(part).__name__}")
        kind = part.get("type", "text" if "text" in part else None)
        try:
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise LMStudioValueError(f"{where}: 'text' must be a string")
                texts.append(text)
            elif kind == "file":
                images.append(
                    FileHandle(
                        name=part["name"],
                        identifier=part["identifier"],
                        size_bytes=part.get("sizeBytes", part.get("size_bytes", 0)),
                        file_type=part.get("fileType", part.get("file_type", "unknown")),
                    )
                )
            elif kind == "toolCallRequest":
                request = part.get("toolCallRequest", part.get("tool_call_request"))
                calls.append(msgspec.convert(request, ToolCallRequest))
            elif kind == "toolCallResult":
                call_id = part.get("toolCallId", part.get("tool_call_id"))
                results.append(ToolCallResult(content=part["content"], tool_call_id=call_id))
            else:
                raise LMStudioValueError(f"{where}: unknown part type {kind!r}")
        except (KeyError, TypeError, msgspec.ValidationError) as exc:
            raise LMStudioValueError(f"{where} ({kind}) is malformed: {exc}") from None
    return ChatMessage(
        role=role,  # type: ignore[arg-type]  # checked by ChatMessage
        content="\n\n".join(texts),
        images=tuple(images),
        tool_calls=tuple(calls),
        tool_results=tuple(results),
    )


class Chat:
    """A chat history for :meth:`LLM.respond` and :meth:`LLM.act`: a list of :class:`ChatMessage`.

    ::

        chat = Chat("You are terse.")  # optional system prompt
        chat.add_user("Name a colour.")
        reply = await llm.respond(chat)
        chat.add_assistant(reply)

    ``respond`` also takes a plain string (one user message), a list of
    ``{"role": ..., "content": ...}`` dicts / :class:`ChatMessage`, or the official SDKs'
    history dict ``{"messages": [...]}`` (see :meth:`from_history`).
    """

    __slots__ = ("_messages",)

    def __init__(self, system: str | None = None) -> None:
        self._messages: list[ChatMessage] = []
        if system is not None:
            self.add_system(system)

    def __repr__(self) -> str:
        return f"Chat({self._messages!r})"

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self._messages)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Chat):
            return NotImplemented
        return self._messages == other._messages

    __hash__ = None  # type: ignore[assignment]

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The messages, oldest first."""
        return tuple(self._messages)

    def append(self, message: ChatMessage) -> Chat:
        """Append a :class:`ChatMessage`; returns the chat (for chaining)."""
        if not isinstance(message, ChatMessage):
            raise LMStudioValueError(f"expected a ChatMessage, got {type(message).__name__}")
        self._messages.append(message)
        return self

    def add(self, role: Role, content: str) -> Chat:
        """Append a text message; returns the chat (for chaining)."""
        return self.append(ChatMessage(role=role, content=content))

    def add_system(self, content: str) -> Chat:
        """Append a system message; returns the chat."""
        return self.add("system", content)

    def add_user(self, content: str, *, images: Sequence[FileHandle] = ()) -> Chat:
        """Append a user message, with optional ``images`` (handles from
        :meth:`FilesNamespace.prepare_image`); returns the chat."""
        if isinstance(images, FileHandle):
            images = (images,)
        return self.append(ChatMessage(role="user", content=content, images=tuple(images)))

    def add_assistant(
        self, content: str | PredictionResult, *, tool_calls: Sequence[ToolCallRequest] = ()
    ) -> Chat:
        """Append an assistant message; returns the chat.

        ``content`` is the text, or a :class:`PredictionResult` (its text and the tool calls
        it asked for). ``tool_calls`` adds tool calls the assistant made.
        """
        if isinstance(content, PredictionResult):
            tool_calls = (*content.tool_calls, *tool_calls)
            content = content.content
        return self.append(
            ChatMessage(role="assistant", content=content, tool_calls=tuple(tool_calls))
        )

    def add_tool_result(self, call: ToolCallRequest | str | None, result: Any) -> Chat:
        """Append the result of one tool call; returns the chat.

        ``call`` is the :class:`ToolCallRequest` (or its id); ``result`` is what the tool
        returned: its JSON is what the model reads (as ``act`` sends it), so a string
        arrives as a JSON string. Raises :class:`LMStudioValueError` for a value with no
        JSON form.
        """
        call_id = call.id if isinstance(call, ToolCallRequest) else call
        if call_id is not None and not isinstance(call_id, str):
            raise LMStudioValueError(
                f"call must be a ToolCallRequest or its id, got {type(call).__name__}"
            )
        try:
            text = encode_tool_result(result)
        except (TypeError, ValueError) as exc:
            raise LMStudioValueError(f"the tool result has no JSON form: {exc}") from None
        return self.append(
            ChatMessage(
                role="tool", tool_results=(ToolCallResult(content=text, tool_call_id=call_id),)
            )
        )

    def copy(self) -> Chat:
        """A new chat with the same messages."""
        chat = Chat()
        chat._messages = list(self._messages)
        return chat

    @classmethod
    def from_history(cls, history: object) -> Chat:
        """A chat from the official SDKs' history: ``{"messages": [{"role": ..., "content":
        [parts]}]}`` (parts ``text``, ``file``, ``toolCallRequest``, ``toolCallResult``; a
        plain string is accepted as text), a string (one user message) or a :class:`Chat`
        (copied). Several text parts of one message are joined with a blank line."""
        if isinstance(history, Chat):
            return history.copy()
        if isinstance(history, str):
            return cls().add_user(history)
        messages = history.get("messages") if isinstance(history, Mapping) else None
        if not isinstance(messages, list):
            raise LMStudioValueError(
                "expected a Chat, a string or a history dict with a 'messages' list, "
                f"got {type(history).__name__}"
            )
        chat = cls()
        chat._messages = [_message_from_wire(i, m) for i, m in enumerate(messages)]
        return chat

    def to_history(self) -> dict[str, Any]:
        """The history in the official SDKs' shape (``ChatHistoryData``), which
        :meth:`from_history` (ours or ``lmstudio.Chat.from_history``) reads back."""
        return {"messages": [m.to_wire() for m in self._messages]}

    def to_wire(self) -> dict[str, Any]:
        """The wire ``ChatHistoryData`` (same as :meth:`to_history`)."""
        return self.to_history()

    @property
    def images(self) -> tuple[FileHandle, ...]:
        """Every image attached to a message of this chat."""
        return tuple(i for m in self._messages for i in m.images)


ChatInput: TypeAlias = "str | Chat | Sequence[ChatMessage | Mapping[str, Any]] | Mapping[str, Any]"
"""What ``respond`` takes: a user message, a :class:`Chat`, a list of messages, or a history
dict ``{"messages": [...]}``."""


def coerce_chat(value: object) -> Chat:
    """A :class:`Chat` from a string, a :class:`Chat`, a history dict or a sequence of
    messages / dicts.

    Raises :class:`~lmstudio_async.LMStudioValueError` for anything else and for an
    empty history.
    """
    if isinstance(value, str):
        return Chat().add_user(value)
    if isinstance(value, Chat):
        chat = value
    elif isinstance(value, Mapping):
        chat = Chat.from_history(value)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        chat = Chat()
        for index, item in enumerate(value):
            if isinstance(item, ChatMessage):
                chat._messages.append(item)
            elif isinstance(item, Mapping):
                if set(item) != {"role", "content"}:
                    raise LMStudioValueError(
                        f"chat message {index} must have exactly the keys 'role' and "
                        f"'content', got {sorted(map(str, item))}"
                    )
                if isinstance(item["content"], str):
                    chat.add(item["role"], item["content"])
                else:
                    chat._messages.append(_message_from_wire(index, item))
            else:
                raise LMStudioValueError(
                    f"chat message {index} must be a ChatMessage or a dict with 'role' and "
                    f"'content', got {type(item).__name__}"
                )
    else:
        raise LMStudioValueError(
            "expected a prompt string, a Chat, or a list of {'role', 'content'} messages, "
            f"got {type(value).__name__}"
        )
    if not chat._messages:
        raise LMStudioValueError("the chat history is empty: add at least one message")
    return chat


# ---------------------------------------------------------------------------
# Request parameters


def predict_creation(
    specifier: dict[str, Any],
    chat: Chat,
    config: object,
    *,
    tools: ToolSet | None = None,
    response_format: ResponseFormat | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Creation parameter of the ``predict`` channel.

    ``tools`` sets ``llm.prediction.tools``; ``response_format`` sets
    ``llm.prediction.structured`` (a :class:`ConfigError` if ``config`` has a
    ``json_schema`` too); ``preset`` is sent as ``fuzzyPresetIdentifier``.
    """
    stack = prediction_config_stack(config)
    fields: list[dict[str, Any]] = stack["layers"][0]["config"]["fields"]
    if response_format is not None:
        if any(f["key"] == _STRUCTURED_KEY for f in fields):
            raise ConfigError(
                "response_format= and PredictionConfig.json_schema (or grammar) both ask "
                "for structured output; give only one",
                field="json_schema",
            )
        structured = {"type": "json", "jsonSchema": response_format.schema}
        fields.append({"key": _STRUCTURED_KEY, "value": structured})
    if tools is not None:
        fields.append({"key": _TOOLS_KEY, "value": tools.setting()})
    creation: dict[str, Any] = {
        "modelSpecifier": specifier,
        "history": chat.to_wire(),
        "predictionConfigStack": stack,
    }
    if preset is not None:
        creation["fuzzyPresetIdentifier"] = check_preset(preset)
    return creation


def check_preset(preset: object) -> str:
    """A preset identifier, checked (a non-empty string)."""
    if not isinstance(preset, str) or not preset.strip():
        raise LMStudioValueError(f"preset must be a non-empty preset identifier, got {preset!r}")
    return preset


def complete_creation(
    specifier: dict[str, Any], prompt: str, config: object, *, preset: str | None = None
) -> dict[str, Any]:
    """Creation parameter of the ``completeRawText`` channel."""
    if not isinstance(prompt, str):
        raise LMStudioValueError(f"prompt must be a string, got {type(prompt).__name__}")
    creation: dict[str, Any] = {
        "modelSpecifier": specifier,
        "rawPrompt": prompt,
        "predictionConfigStack": prediction_config_stack(config),
    }
    if preset is not None:
        creation["fuzzyPresetIdentifier"] = check_preset(preset)
    return creation


def tokenize_param(specifier: dict[str, Any], text: str) -> dict[str, Any]:
    """Parameter of ``tokenize`` / ``countTokens``."""
    return {"specifier": specifier, "inputString": text}


def embed_param(specifier: dict[str, Any], text: str) -> dict[str, Any]:
    """Parameter of ``embedString`` (whose key is ``modelSpecifier``)."""
    return {"modelSpecifier": specifier, "inputString": text}


def apply_template_param(specifier: dict[str, Any], chat: Chat) -> dict[str, Any]:
    """Parameter of ``applyPromptTemplate`` (an empty config stack, as both SDKs send)."""
    return {
        "specifier": specifier,
        "history": chat.to_wire(),
        "predictionConfigStack": {"layers": []},
        "opts": {},
    }


# ---------------------------------------------------------------------------
# Channel packets and results


class Fragment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A piece of generated text, as it arrives."""

    content: str
    """The text."""
    tokens_count: int = 0
    """How many tokens it holds."""
    contains_drafted: bool = False
    """Whether it contains tokens from the draft model (speculative decoding)."""
    reasoning_type: str = "none"
    """A :data:`ReasoningType`: ``"none"``, ``"reasoning"``, ``"reasoningStartTag"`` or
    ``"reasoningEndTag"``."""
    is_structural: bool = False
    """Structural (e.g. a reasoning tag) rather than content."""


class PredictionStats(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Statistics of a finished prediction (``None``: not reported by the server)."""

    stop_reason: str
    """A :data:`StopReason`, e.g. ``"eosFound"``, ``"maxPredictedTokensReached"``,
    ``"stopStringFound"``, ``"userStopped"``."""
    stop_string: str | None = None
    """The stop string that ended it (with ``"stopStringFound"``)."""
    tokens_per_second: float | None = None
    """Generation speed."""
    time_to_first_token_sec: float | None = None
    """Seconds until the first token."""
    total_time_sec: float | None = None
    """Seconds the whole prediction took."""
    prompt_tokens_count: int | None = None
    """Tokens in the prompt."""
    predicted_tokens_count: int | None = None
    """Tokens generated."""
    total_tokens_count: int | None = None
    """Prompt plus generated tokens."""
    num_gpu_layers: float | None = None
    """Layers offloaded to the GPU."""
    used_draft_model_key: str | None = None
    """Draft model used for speculative decoding."""
    total_draft_tokens_count: int | None = None
    """Draft tokens generated."""
    accepted_draft_tokens_count: int | None = None
    """Draft tokens accepted."""
    rejected_draft_tokens_count: int | None = None
    """Draft tokens rejected."""
    ignored_draft_tokens_count: int | None = None
    """Draft tokens ignored."""


class _Packet(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class FragmentPacket(_Packet, tag="fragment"):
    """``{"type": "fragment", "fragment": {...}}``."""

    fragment: Fragment


class PromptProcessingProgress(_Packet, tag="promptProcessingProgress"):
    """Prompt processing progress in [0, 1]."""

    progress: float


class PredictionSuccess(_Packet, tag="success"):
    """Terminal packet: stats, the instance, and the effective configs."""

    stats: PredictionStats
    model_info: LlmInstanceInfo
    load_model_config: KvConfig = msgspec.field(default_factory=KvConfig)
    prediction_config: KvConfig = msgspec.field(default_factory=KvConfig)


class _ToolCallStart(_Packet, tag="toolCallGenerationStart"):
    pass


class _ToolCallName(_Packet, tag="toolCallGenerationNameReceived"):
    pass


class _ToolCallArgument(_Packet, tag="toolCallGenerationArgumentFragmentGenerated"):
    pass


class _WireToolCallRequest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: dict[str, Any] | None = None
    id: str | None = None


class ToolCallEndPacket(_Packet, tag="toolCallGenerationEnd"):
    """The model finished writing a tool call."""

    tool_call_request: _WireToolCallRequest
    raw_content: str | None = None

    def request(self) -> ToolCallRequest:
        """The call as a :class:`ToolCallRequest` (missing arguments become ``{}``)."""
        wire = self.tool_call_request
        return ToolCallRequest(name=wire.name, arguments=wire.arguments or {}, id=wire.id)


class ToolCallFailedPacket(_Packet, tag="toolCallGenerationFailed"):
    """The model wrote a tool call LM Studio could not parse."""

    error: Any = None
    raw_content: str | None = None


PredictionPacket: TypeAlias = (
    FragmentPacket
    | PromptProcessingProgress
    | PredictionSuccess
    | _ToolCallStart
    | _ToolCallName
    | _ToolCallArgument
    | ToolCallEndPacket
    | ToolCallFailedPacket
)
PREDICTION_PACKET_DECODER: msgspec.json.Decoder[PredictionPacket] = msgspec.json.Decoder(
    PredictionPacket
)


class TokensReply(msgspec.Struct, frozen=True):
    """``tokenize`` result."""

    tokens: list[int]


class TokenCountReply(msgspec.Struct, frozen=True, rename="camel"):
    """``countTokens`` result."""

    token_count: int


class EmbeddingReply(msgspec.Struct, frozen=True):
    """``embedString`` result."""

    embedding: list[float]


class FormattedReply(msgspec.Struct, frozen=True):
    """``applyPromptTemplate`` result."""

    formatted: str


_NOT_PARSED: Final[Any] = msgspec.UNSET


@dataclasses.dataclass(frozen=True, slots=True)
class PredictionResult:
    """The outcome of :meth:`LLM.respond` / :meth:`LLM.complete` (or a finished stream)."""

    content: str
    """The full generated text."""
    stats: PredictionStats
    """Token counts, speed, time to first token, stop reason."""
    model_info: LlmInstanceInfo
    """The instance that answered."""
    prediction_config: PredictionConfig
    """The effective prediction config the server reported (the fields we can represent)."""
    load_config: LlmLoadConfig
    """The instance's load config, as the server reported it."""
    tool_calls: tuple[ToolCallRequest, ...] = ()
    """The tool calls the model asked for (``respond(..., tools=...)``), in order; the
    prediction then ends with stop reason ``"toolCalls"``."""
    _parsed: Any = dataclasses.field(default=_NOT_PARSED, repr=False, compare=False)

    def __str__(self) -> str:
        return self.content

    @property
    def stop_reason(self) -> str:
        """Why the prediction ended (``stats.stop_reason``)."""
        return self.stats.stop_reason

    @property
    def parsed(self) -> Any:
        """The structured reply: with ``respond(..., response_format=T)`` an instance of
        ``T`` (validated when the prediction finished); otherwise ``content`` decoded as
        JSON (raises if it is not JSON)."""
        if self._parsed is not _NOT_PARSED:
            return self._parsed
        return msgspec.json.decode(self.content)


@dataclasses.dataclass(frozen=True, slots=True)
class PredictionRoundResult(PredictionResult):
    """The result of one prediction round of :meth:`LLM.act` (``on_prediction_completed``)."""

    round_index: int = 0
    """Which round (from 0)."""


_KV_ENCODER: Final = msgspec.json.Encoder()
_KV_DECODER: Final = msgspec.json.Decoder(KvConfig)


# A model's load config and a caller's prediction config repeat from one prediction to the
# next (every round of ``act``): map each distinct one once. Both results are frozen.
@functools.lru_cache(maxsize=256)
def _load_config_of(raw: bytes) -> LlmLoadConfig:
    return fields_to_load_config("llm", _KV_DECODER.decode(raw))


@functools.lru_cache(maxsize=256)
def _prediction_config_of(raw: bytes) -> PredictionConfig:
    return fields_to_prediction_config(_KV_DECODER.decode(raw))


def result_from_success(
    content: str,
    packet: PredictionSuccess,
    tool_calls: Sequence[ToolCallRequest] = (),
) -> PredictionResult:
    """Build a :class:`PredictionResult` from the text and the ``success`` packet."""
    return PredictionResult(
        content=content,
        stats=packet.stats,
        model_info=packet.model_info,
        prediction_config=_prediction_config_of(_KV_ENCODER.encode(packet.prediction_config)),
        load_config=_load_config_of(_KV_ENCODER.encode(packet.load_model_config)),
        tool_calls=tuple(tool_calls),
    )
