"""The server's error payload (``SerializedLMSExtendedError``) and its mapping
to :class:`~lmstudio_async.errors.ServerError` and its subclasses (protocol.md §3).

Which typed error a server error becomes is decided here and only here. LM Studio sends a
``displayData.code`` for the model-not-found family; insufficient memory, a taken
identifier and an unknown LM Link device come without one and are recognised by their text
(:data:`LOAD_ERROR_RULES`): partly guesses, listed in docs/stand-in.md ("Typed server
errors"). Correct a rule here and every caller follows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from lmstudio_async.errors import (
    DeviceNotFoundError,
    DomainMismatchError,
    DraftModelError,
    IdentifierTakenError,
    InsufficientMemoryError,
    ModelNotFoundError,
    PresetNotFoundError,
    ServerError,
    VisionNotSupportedError,
    scrub,
)

__all__ = [
    "DOMAIN_MISMATCH_CODE",
    "LOAD_ERROR_RULES",
    "LOAD_OPERATION",
    "MALFORMED_ERROR_TITLE",
    "MODEL_NOT_FOUND_CODES",
    "Rule",
    "SerializedError",
    "classify_load_error",
    "decode_serialized_error",
    "map_server_error",
]

#: ``displayData.code`` values reported as :class:`ModelNotFoundError`.
MODEL_NOT_FOUND_CODES: frozenset[str] = frozenset(
    {
        "generic.noModelMatchingQuery",
        "generic.pathNotFound",
        "generic.identifierNotFound",
        "generic.specificModelUnloaded",
    }
)

#: ``displayData.code`` of the error reported as :class:`DomainMismatchError`.
DOMAIN_MISMATCH_CODE = "generic.domainMismatch"

#: Title used when the server's error payload cannot be understood at all.
MALFORMED_ERROR_TITLE = "Malformed server error"


@dataclass(frozen=True)
class Rule:
    """A server error whose ``displayData.code`` is in ``codes``, or whose title, root
    title or cause matches ``text`` (or ``load_text``, for errors of a ``loadModel`` call
    only), becomes ``cls``. ``source`` says what the rule rests on; ``guess`` marks rules
    not confirmed against a real LM Studio."""

    cls: type[ServerError]
    codes: frozenset[str]
    text: re.Pattern[str]
    source: str
    guess: bool = True
    load_text: re.Pattern[str] | None = None


#: The ``operation`` of a ``loadModel`` call (see ``AsyncClient._load_channel``).
LOAD_OPERATION = "Model load"

#: Operations whose code-less errors the text rules of :data:`LOAD_ERROR_RULES` read: a
#: model key, file name or identifier in another operation's error (a file named
#: ``device-photo.png``) must not turn it into a load error.
LOAD_OPERATIONS: frozenset[str] = frozenset({LOAD_OPERATION, "Get-or-load", "Estimate", "Unload"})

#: Operations whose code-less errors may be a vision or draft-model error by their text.
PREDICTION_OPERATIONS: frozenset[str] = frozenset({"Chat response", "Completion"})


#: Load-time errors LM Studio sends without a code, first match wins (a code beats text).
LOAD_ERROR_RULES: tuple[Rule, ...] = (
    Rule(
        InsufficientMemoryError,
        frozenset(),  # no code known
        re.compile(
            r"insufficient (system )?(resources|memory)"  # LM Studio's guardrail refusal
            r"|not enough (system )?(resources|memory)"  # its load dialog
            r"|out of memory|(failed|unable) to allocate",  # engine allocation failures
            re.IGNORECASE,
        ),
        'LM Studio bug reports quote "Model loading was stopped due to insufficient system '
        'resources" (0.3.27+) and "Model loading aborted due to insufficient system resources"',
    ),
    Rule(
        IdentifierTakenError,
        frozenset(),  # no code known
        re.compile(r"\bidentifier\b.*\balready (exists|in use|taken)", re.IGNORECASE),
        "lmstudio-python's tests expect \"already exists\" when a load's identifier is taken",
        load_text=re.compile(r"\balready exists\b", re.IGNORECASE),
    ),
    Rule(
        DeviceNotFoundError,
        frozenset(),  # no code known
        re.compile(r"\b(unknown|no such) (lm link )?device\b|\bdevice\b.*\bnot found", re.I),
        "nothing: LM Link's errors appear in neither official SDK",
    ),
)


def _identifier(error_data: Any, subject: str | None) -> str | None:
    if isinstance(error_data, Mapping) and isinstance(error_data.get("identifier"), str):
        return str(error_data["identifier"])
    return subject


def classify_load_error(
    err: SerializedError, code: str | None, operation: str | None = None
) -> type[ServerError] | None:
    """The class :data:`LOAD_ERROR_RULES` give ``err`` (``None``: no rule matches). Its
    text is read only for an ``operation`` in :data:`LOAD_OPERATIONS` (or none given)."""
    if code is not None:
        for rule in LOAD_ERROR_RULES:
            if code in rule.codes:
                return rule.cls
        return None
    if operation is not None and operation not in LOAD_OPERATIONS:
        return None
    texts = [t for t in (err.title, err.root_title, err.cause) if t]
    for rule in LOAD_ERROR_RULES:
        patterns = [rule.text]
        if rule.load_text is not None and operation == LOAD_OPERATION:
            patterns.append(rule.load_text)
        if any(p.search(t) for p in patterns for t in texts):
            return rule.cls
    return None


class SerializedError(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """The wire form of a server error. Every field is optional.

    Decode it with :func:`decode_serialized_error`, which never raises.
    """

    title: str | None = None
    root_title: str | None = None
    cause: str | None = None
    suggestion: str | None = None
    error_data: dict[str, Any] | None = None
    display_data: dict[str, Any] | None = None
    stack: str | None = None


_STR_FIELDS = {
    "title": "title",
    "rootTitle": "root_title",
    "cause": "cause",
    "suggestion": "suggestion",
    "stack": "stack",
}
_DICT_FIELDS = {"errorData": "error_data", "displayData": "display_data"}


def decode_serialized_error(
    raw: bytes | str | msgspec.Raw | Mapping[str, Any] | None,
) -> SerializedError:
    """Decode a server error payload leniently; never raises.

    Unknown keys are ignored and fields of the wrong type are dropped (as the
    JS client does). A payload that is not a JSON object at all becomes a
    :class:`SerializedError` titled ``"Malformed server error"`` with the
    payload's text as ``cause``; a bare JSON string becomes the title.
    """
    data: Any
    if isinstance(raw, Mapping):
        data = raw
    elif raw is None:
        return SerializedError(title=MALFORMED_ERROR_TITLE, cause="the error payload was empty")
    else:
        buf = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
        try:
            data = msgspec.json.decode(buf)
        except (msgspec.DecodeError, TypeError, ValueError):
            text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else str(buf)
            return SerializedError(title=MALFORMED_ERROR_TITLE, cause=_truncate(text))
    if isinstance(data, str):
        return SerializedError(title=data or MALFORMED_ERROR_TITLE)
    if not isinstance(data, Mapping):
        return SerializedError(title=MALFORMED_ERROR_TITLE, cause=_truncate(repr(data)))
    kwargs: dict[str, Any] = {}
    for wire, name in _STR_FIELDS.items():
        value = data.get(wire)
        if isinstance(value, str):
            kwargs[name] = value
    for wire, name in _DICT_FIELDS.items():
        value = data.get(wire)
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            kwargs[name] = dict(value)
    return SerializedError(**kwargs)


def _truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def map_server_error(
    err: SerializedError,
    *,
    operation: str,
    subject: str | None = None,
    secrets: Iterable[str | None] = (),
    domain: str | None = None,
) -> ServerError:
    """Turn a server error payload into the exception to raise.

    Returns :class:`ModelNotFoundError` for the codes in
    :data:`MODEL_NOT_FOUND_CODES`, :class:`DomainMismatchError` for
    :data:`DOMAIN_MISMATCH_CODE`, a typed error by :data:`LOAD_ERROR_RULES`, else
    :class:`ServerError`. ``operation``
    (e.g. ``"Model load"``, ``"Unload"``, ``"RPC getModelInfo"``) prefixes the
    message; ``subject`` is the model key / identifier / path the user asked
    about, used when the server's data does not name it; ``domain`` the kind of model
    asked for (``"llm"``, ``"embedding"``), when the call was on such a namespace. Any
    string in ``secrets`` (e.g. the API token) is replaced by ``***`` in all text taken
    from the server. The server's ``stack`` is dropped.
    """
    secret_list = [s for s in secrets if s]

    def clean(text: str | None) -> str | None:
        return scrub(text, secret_list) if text is not None else None

    title = clean(err.title) or clean(err.root_title) or "Unknown error"
    root_title = clean(err.root_title)
    display_data = (
        _scrub_obj(err.display_data, secret_list) if err.display_data else err.display_data
    )
    error_data = _scrub_obj(err.error_data, secret_list) if err.error_data else err.error_data
    code = display_data.get("code") if isinstance(display_data, dict) else None
    common: dict[str, Any] = {
        "root_title": root_title,
        "cause": clean(err.cause),
        "suggestion": clean(err.suggestion),
        "display_data": display_data,
        "error_data": error_data,
        "operation": operation,
    }
    if code in MODEL_NOT_FOUND_CODES:
        return ModelNotFoundError(title, subject=subject, domain=domain, **common)
    if code == DOMAIN_MISMATCH_CODE:
        assert isinstance(display_data, dict)  # the code came from it
        path, expected = display_data.get("path"), display_data.get("expectedDomain")
        return DomainMismatchError(
            title,
            model=path if isinstance(path, str) else subject,
            expected_domain=expected if isinstance(expected, str) else domain,
            **common,
        )
    typed = classify_load_error(err, code if isinstance(code, str) else None, operation)
    if typed is IdentifierTakenError:  # the identifier asked for, when the data names none
        return IdentifierTakenError(title, identifier=_identifier(error_data, subject), **common)
    if typed is not None:
        return typed(title, **common)
    by_text = operation in PREDICTION_OPERATIONS
    inference = _inference_error(code, title, display_data, error_data, subject, common, by_text)
    if inference is not None:
        return inference
    return ServerError(title, **common)


# Issue 17's prediction errors. Only ``generic.presetNotFound`` is a code LM Studio documents
# (lmstudio-js GenericErrorDisplayData); for images sent to a non-vision model and for a bad
# draft model no code is known, so the codes below are the stand-in's and the title patterns
# a guess at LM Studio's wording (docs/stand-in.md).
VISION_CODES: frozenset[str] = frozenset({"generic.visionNotSupported"})
DRAFT_MODEL_CODES: frozenset[str] = frozenset(
    {"generic.draftModelNotFound", "generic.draftModelIncompatible"}
)
_VISION_RE = re.compile(
    r"does not support (?:images|vision)|\b(?:no|not|without) (?:a )?vision\b"
    r"|\bvision (?:is )?not (?:supported|enabled)|image inputs? (?:is|are) not",
    re.I,
)
_DRAFT_RE = re.compile(r"\bdraft(?:ing)? model\b", re.I)


def _first_str(*sources: Any, key: str) -> str | None:
    for source in sources:
        if isinstance(source, Mapping) and isinstance(source.get(key), str):
            return str(source[key])
    return None


def _inference_error(
    code: object,
    title: str,
    display_data: Any,
    error_data: Any,
    subject: str | None,
    common: dict[str, Any],
    by_text: bool,
) -> ServerError | None:
    if code == "generic.presetNotFound":
        data = display_data if isinstance(display_data, Mapping) else {}
        sample = data.get("availablePresetsSample")
        available = [
            str(p["identifier"])
            for p in (sample if isinstance(sample, list) else [])
            if isinstance(p, Mapping) and isinstance(p.get("identifier"), str)
        ]
        preset = _first_str(display_data, error_data, key="specifiedFuzzyPresetIdentifier")
        return PresetNotFoundError(title, preset=preset, available=available, **common)
    by_text = by_text and code is None
    if code in VISION_CODES or (by_text and _VISION_RE.search(title)):
        return VisionNotSupportedError(title, subject=subject, **common)
    if code in DRAFT_MODEL_CODES or (by_text and _DRAFT_RE.search(title)):
        draft = _first_str(error_data, display_data, key="draftModel")
        return DraftModelError(title, draft_model=draft, **common)
    return None


def _scrub_obj(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_obj(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_obj(v, secrets) for v in value]
    return value
