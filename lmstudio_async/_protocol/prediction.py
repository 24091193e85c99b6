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
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal, TypeAlias

import msgspec
import msgspec.structs

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

Role: TypeAlias = Literal["system", "user", "assistant"]
"""Role of a :class:`ChatMessage`."""

_POLICIES: tuple[str, ...] = ("stopAtLimit", "truncateMiddle", "rollingWindow")
_ROLES: tuple[str, ...] = ("system", "user", "assistant")


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


def _structured_schema(value: Any) -> Any:
    """The official SDKs' ``structured`` setting -> our ``json_schema`` (None for "none")."""
    if isinstance(value, Mapping) and value.get("type") == "none":
        return None
    if isinstance(value, Mapping) and value.get("type") == "json" and "jsonSchema" in value:
        return value["jsonSchema"]
    raise ConfigError(
        "prediction config field 'structured' must be {'type': 'json', 'jsonSchema': {...}} "
        f"or {{'type': 'none'}}, got {value!r}; or pass the schema as 'json_schema'",
        field="structured",
    )


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"prediction config keys must be strings, got {key!r}", field=None)
        if key == "structured":
            name, value = "json_schema", _structured_schema(value)
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
            if not (isinstance(raw, Mapping) and raw.get("type") == "json"):
                continue
            raw = raw.get("jsonSchema")
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
    """One message of a :class:`Chat`: ``role`` (system, user, assistant) and text ``content``."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise LMStudioValueError(
                f"chat message role must be 'system', 'user' or 'assistant', got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise LMStudioValueError(
                f"chat message content must be a string, got {type(self.content).__name__}"
            )


class Chat:
    """A chat history for :meth:`LLM.respond`: a list of :class:`ChatMessage`.

    ::

        chat = Chat("You are terse.")  # optional system prompt
        chat.add_user("Name a colour.")
        reply = await llm.respond(chat)
        chat.add_assistant(reply.content)

    ``respond`` also takes a plain string (one user message) or a list of
    ``{"role": ..., "content": ...}`` dicts / :class:`ChatMessage`.
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

    def add(self, role: Role, content: str) -> Chat:
        """Append a message; returns the chat (for chaining)."""
        self._messages.append(ChatMessage(role=role, content=content))
        return self

    def add_system(self, content: str) -> Chat:
        """Append a system message; returns the chat."""
        return self.add("system", content)

    def add_user(self, content: str) -> Chat:
        """Append a user message; returns the chat."""
        return self.add("user", content)

    def add_assistant(self, content: str) -> Chat:
        """Append an assistant message; returns the chat."""
        return self.add("assistant", content)

    def copy(self) -> Chat:
        """A new chat with the same messages."""
        chat = Chat()
        chat._messages = list(self._messages)
        return chat

    def to_wire(self) -> dict[str, Any]:
        """The wire ``ChatHistoryData``."""
        return {
            "messages": [
                {"role": m.role, "content": [{"type": "text", "text": m.content}]}
                for m in self._messages
            ]
        }


ChatInput: TypeAlias = "str | Chat | Sequence[ChatMessage | Mapping[str, Any]]"
"""What ``respond`` takes: a user message, a :class:`Chat`, or a list of messages."""


def coerce_chat(value: object) -> Chat:
    """A :class:`Chat` from a string, a :class:`Chat` or a sequence of messages / dicts.

    Raises :class:`~lmstudio_async.LMStudioValueError` for anything else and for an
    empty history.
    """
    if isinstance(value, str):
        return Chat().add_user(value)
    if isinstance(value, Chat):
        chat = value
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        chat = Chat()
        for index, item in enumerate(value):
            if isinstance(item, ChatMessage):
                chat._messages.append(item)
            elif isinstance(item, Mapping):
                extra = set(item) - {"role", "content"}
                if extra or "role" not in item or "content" not in item:
                    raise LMStudioValueError(
                        f"chat message {index} must have exactly the keys 'role' and "
                        f"'content', got {sorted(map(str, item))}"
                    )
                chat.add(item["role"], item["content"])
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


def predict_creation(specifier: dict[str, Any], chat: Chat, config: object) -> dict[str, Any]:
    """Creation parameter of the ``predict`` channel."""
    return {
        "modelSpecifier": specifier,
        "history": chat.to_wire(),
        "predictionConfigStack": prediction_config_stack(config),
    }


def complete_creation(specifier: dict[str, Any], prompt: str, config: object) -> dict[str, Any]:
    """Creation parameter of the ``completeRawText`` channel."""
    if not isinstance(prompt, str):
        raise LMStudioValueError(f"prompt must be a string, got {type(prompt).__name__}")
    return {
        "modelSpecifier": specifier,
        "rawPrompt": prompt,
        "predictionConfigStack": prediction_config_stack(config),
    }


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


class _ToolCallEnd(_Packet, tag="toolCallGenerationEnd"):
    pass


class _ToolCallFailed(_Packet, tag="toolCallGenerationFailed"):
    pass


PredictionPacket: TypeAlias = (
    FragmentPacket
    | PromptProcessingProgress
    | PredictionSuccess
    | _ToolCallStart
    | _ToolCallName
    | _ToolCallArgument
    | _ToolCallEnd
    | _ToolCallFailed
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

    def __str__(self) -> str:
        return self.content

    @property
    def stop_reason(self) -> str:
        """Why the prediction ended (``stats.stop_reason``)."""
        return self.stats.stop_reason

    @property
    def parsed(self) -> Any:
        """``content`` decoded as JSON (for structured output; raises if it is not JSON)."""
        return msgspec.json.decode(self.content)


def result_from_success(content: str, packet: PredictionSuccess) -> PredictionResult:
    """Build a :class:`PredictionResult` from the text and the ``success`` packet."""
    return PredictionResult(
        content=content,
        stats=packet.stats,
        model_info=packet.model_info,
        prediction_config=fields_to_prediction_config(packet.prediction_config),
        load_config=fields_to_load_config("llm", packet.load_model_config),
    )
