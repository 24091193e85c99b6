"""Prediction settings and request payloads of the inference endpoints (protocol.md §4.11,
§7.5): pure, no I/O.

* :class:`PredictionConfig`: typed sampling / output settings, validated on
  construction like the load configs, and their KV-stack form on the wire.
* The creation parameters of the ``predict`` / ``completeRawText`` channels and the
  request parameters of ``tokenize``, ``countTokens``, ``applyPromptTemplate`` and
  ``embedString``.

The chat history they carry is in :mod:`.chat`; the packets and results that come back
are in :mod:`.results`.

Mapping choices: checkbox keys (``maxPredictedTokens``, ``topPSampling``,
``minPSampling``, ``repeatPenalty``) are written ``{"checked": true, "value": v}``
when set and omitted when unset, as for load configs. ``json_schema`` becomes
``llm.prediction.structured = {"type": "json", "jsonSchema": schema}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias

import msgspec
import msgspec.structs

from lmstudio_async._protocol.endpoints import check_key
from lmstudio_async._protocol.kvconfig import (
    API_OVERRIDE_LAYER,
    KvConfig,
    KvField,
    _camel,
    _iter_fields,
    _plain,
    _read_checkbox,
    convert_config,
)
from lmstudio_async._protocol.tools import ResponseFormat, ToolSet, inline_schema
from lmstudio_async.config import ConfigBase, is_number, is_sequence
from lmstudio_async.errors import ConfigError, LMStudioValueError

if TYPE_CHECKING:
    from lmstudio_async._protocol.chat import Chat

__all__ = [
    "ContextOverflowPolicy",
    "PredictionConfig",
    "apply_template_param",
    "check_preset",
    "check_tools_alone",
    "coerce_prediction_config",
    "complete_creation",
    "complete_via_predict",
    "embed_param",
    "fields_to_prediction_config",
    "predict_creation",
    "prediction_config_stack",
    "prediction_config_to_fields",
    "requested_json_schema",
    "tokenize_param",
]

ContextOverflowPolicy: TypeAlias = Literal["stopAtLimit", "truncateMiddle", "rollingWindow"]
"""What LM Studio does when the conversation outgrows the context window."""

_POLICIES: tuple[str, ...] = ("stopAtLimit", "truncateMiddle", "rollingWindow")


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
    """Top-k sampling: an int in [-1, 500], the range LM Studio takes."""
    top_p: float | None = None
    """Top-p (nucleus) sampling, in ``[0, 1]``."""
    min_p: float | None = None
    """Min-p sampling, in ``[0, 1]``."""
    repeat_penalty: float | None = None
    """Repetition penalty (>= 0; 1 means none)."""
    stop_strings: Sequence[str] | None = None
    """Stop generating when one of these (non-empty) strings is produced."""
    tool_call_stop_strings: Sequence[str] | None = None
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
        self._check_int("top_k", -1, 500)  # the range of LM Studio's schema (lms-kv-config)
        self._check_ratio("top_p")
        self._check_ratio("min_p")
        self._check_number("repeat_penalty", 0.0)
        self._check_strings("stop_strings")
        self._check_strings("tool_call_stop_strings")
        self._check_choice("context_overflow_policy", _POLICIES)
        self._check_int("cpu_threads", 1)
        if self.draft_model is not None:
            try:  # the rule every other key follows (also no lone zero-width space)
                check_key(self.draft_model, "draft_model")
            except LMStudioValueError as exc:
                raise ConfigError(f"PredictionConfig.{exc}", field="draft_model") from exc
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
        if is_sequence(value) and not isinstance(value, tuple):
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
                value = inline_schema(msgspec.json.schema(value))
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
    ``json_schema`` too); ``preset`` is sent as ``fuzzyPresetIdentifier``. Tools and
    structured output (either way) are refused together: see :func:`check_tools_alone`.
    """
    stack = prediction_config_stack(config)
    fields: list[dict[str, Any]] = stack["layers"][0]["config"]["fields"]
    in_config = any(f["key"] == _STRUCTURED_KEY for f in fields)
    check_tools_alone(tools, in_config or response_format is not None)
    if response_format is not None:
        if in_config:
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


def requested_json_schema(creation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a ``predict`` creation parameter asks the reply to follow, if any."""
    for layer in creation["predictionConfigStack"]["layers"]:
        for field in layer["config"]["fields"]:
            if field["key"] == _STRUCTURED_KEY and field["value"].get("type") == "json":
                schema: dict[str, Any] = field["value"]["jsonSchema"]
                return schema
    return None


def check_tools_alone(tools: ToolSet | None, structured: bool) -> None:
    """Refuse tools with structured output (``response_format``, or a ``json_schema`` /
    ``grammar`` in the config): LM Studio does one or the other, and sent both, the model's
    reply follows the structure and the tools are silently never called."""
    if structured and tools is not None and tools.tools:
        raise LMStudioValueError(
            "tools cannot be combined with structured output (response_format, or "
            "json_schema / grammar in the prediction config): LM Studio either calls tools "
            "or writes structured output"
        )


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


#: The layer that makes ``predict`` a raw text completion: a prompt template that writes
#: the messages' text as it is, with no BOS / EOS token and no stop strings of its own.
_COMPLETE_MODE_LAYER: Final = {
    "layerName": "completeModeFormatting",
    "config": {
        "fields": [
            {
                "key": "llm.prediction.promptTemplate",
                "value": {
                    "type": "jinja",
                    "jinjaPromptTemplate": {
                        "bosToken": "",
                        "eosToken": "",
                        "template": "{% for message in messages %}{{ message['content'] }}"
                        "{% endfor %}",
                        "inputConfig": {
                            "messagesConfig": {"contentConfig": {"type": "string"}},
                            "useTools": False,
                        },
                    },
                    "stopStrings": [],
                },
            }
        ]
    },
}


def complete_via_predict(creation: Mapping[str, Any]) -> dict[str, Any]:
    """The ``predict`` channel's creation parameter for the raw completion ``creation``
    describes (a :func:`complete_creation` result): for an LM Studio older than the
    ``completeRawText`` channel (mid-2026). As lmstudio-python completes on every version:
    the prompt is the only (user) message, and a ``completeModeFormatting`` layer after
    the caller's config gives it to the model as it is."""
    stack = creation["predictionConfigStack"]
    predict: dict[str, Any] = {
        "modelSpecifier": creation["modelSpecifier"],
        "history": {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": creation["rawPrompt"]}]}
            ]
        },
        "predictionConfigStack": {"layers": [*stack["layers"], _COMPLETE_MODE_LAYER]},
    }
    if "fuzzyPresetIdentifier" in creation:
        predict["fuzzyPresetIdentifier"] = creation["fuzzyPresetIdentifier"]
    return predict


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
