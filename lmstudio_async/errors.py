"""Exceptions raised by :mod:`lmstudio_async`.

Every exception derives from :class:`LMStudioError`. Several also derive from
the matching built-in so ordinary ``except`` clauses keep working::

    LMStudioError
    ├── LMStudioValueError (ValueError)      bad input caught before sending
    │   └── ConfigError                      unknown / ill-typed / out-of-range config field
    ├── StructuredOutputError (ValueError)   the reply does not match response_format (.content)
    ├── ToolCallError                        act() got a tool call it cannot run or report
    ├── ConfigMismatchError                  model(key, ...) found another config or TTL loaded
    ├── LoopThreadError (RuntimeError)       the sync client's loop thread is gone or misused
    ├── PoolFullError                        a model pool's wait queue is full
    ├── ServerError                          the server reported an error
    │   ├── ModelNotFoundError               no model matches the request
    │   │   └── ModelUnloadedError           the model was unloaded mid-prediction (.result)
    │   ├── DomainMismatchError (ValueError) an LLM's key given for an embedding model, or back
    │   ├── InsufficientMemoryError          not enough memory to load the model
    │   ├── IdentifierTakenError             a loaded instance already has that identifier
    │   ├── DeviceNotFoundError              no LM Link device has that identifier
    │   ├── VisionNotSupportedError          images sent to a model without vision support
    │   ├── DraftModelError                  unknown or incompatible draft model
    │   ├── PresetNotFoundError              no preset has the given identifier
    │   └── UnsupportedEndpointError         this LM Studio is too old for the call (.endpoint)
    ├── ProtocolError                        the peer broke the protocol
    ├── LMStudioTimeoutError (TimeoutError)  a call took too long
    │   └── PoolTimeoutError                 a model pool lease waited past its deadline
    └── LMStudioConnectionError (ConnectionError)
        ├── AuthenticationError              API token missing or rejected
        ├── ClientClosedError                the client was closed
        └── HostDownError                    a model pool host is marked down

    ConfigMismatchWarning (UserWarning)      the warning form of ConfigMismatchError

Secrets: no constructor here takes an API token, and host strings have any
``user:password@`` part removed before they reach a message or an attribute.
Use :func:`scrub` to strip known secrets from server-provided text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._protocol.results import PredictionResult

__all__ = [
    "AuthenticationError",
    "ClientClosedError",
    "ConfigError",
    "ConfigMismatchError",
    "ConfigMismatchWarning",
    "DeviceNotFoundError",
    "DomainMismatchError",
    "DraftModelError",
    "HostDownError",
    "IdentifierTakenError",
    "InsufficientMemoryError",
    "LMStudioConnectionError",
    "LMStudioError",
    "LMStudioTimeoutError",
    "LMStudioValueError",
    "LoopThreadError",
    "ModelNotFoundError",
    "ModelUnloadedError",
    "PoolFullError",
    "PoolTimeoutError",
    "PresetNotFoundError",
    "ProtocolError",
    "ServerError",
    "StructuredOutputError",
    "ToolCallError",
    "VisionNotSupportedError",
    "scrub",
]

_REDACTED = "***"
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<userinfo>[^/@\s]*)@")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` with every non-empty string of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def _safe_host(host: str | None) -> str | None:
    """Drop any ``user:password@`` part from a host or URL string."""
    if host is None:
        return None
    host = str(host)
    match = _USERINFO_RE.match(host)
    if match is None:
        return host
    return (match.group("scheme") or "") + host[match.end() :]


def _rebuild(cls: type[LMStudioError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    Exception.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


class LMStudioError(Exception):
    """Base class of every exception raised by this package."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default exception pickling.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class LMStudioValueError(LMStudioError, ValueError):
    """Invalid input detected on the client side, before anything was sent."""


class ConfigError(LMStudioValueError):
    """An unknown, ill-typed or out-of-range load or prediction config field.

    ``field`` names the offending field (``None`` when the whole config is at
    fault, e.g. a config object for the wrong model domain).
    """

    field: str | None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigMismatchWarning(UserWarning):
    """``model(key, config=...)`` returned an instance loaded with a different config."""


class ConfigMismatchError(LMStudioError):
    """``model(key, config=..., on_config_mismatch="raise")`` found another config loaded."""

    def __init__(self, message: str, *, identifier: str, differences: dict[str, tuple[Any, Any]]):
        super().__init__(message)
        self.identifier = identifier
        self.differences = differences


class LoopThreadError(LMStudioError, RuntimeError):
    """The sync client's event-loop thread is gone, or a sync call was made from inside it
    (e.g. from a coroutine progress callback), which would deadlock."""


class ProtocolError(LMStudioError):
    """The peer violated the protocol: an undecodable or unexpected frame, or a
    peer that is not an LM Studio server at all."""


class LMStudioTimeoutError(LMStudioError, TimeoutError):
    """A call did not complete in time.

    ``kind`` is ``"connect"`` (establishing the connection), ``"idle"`` (no
    message for ``timeout`` seconds) or ``"total"`` (the whole call).
    """

    timeout: float | None
    kind: str

    _KIND_TEXT: ClassVar[dict[str, str]] = {
        "connect": "connecting to LM Studio",
        "idle": "waiting for the server to respond",
        "total": "waiting for the call to complete",
    }

    def __init__(
        self,
        message: str | None = None,
        *,
        timeout: float | None = None,
        kind: str = "total",
        operation: str | None = None,
    ) -> None:
        if message is None:
            what = self._KIND_TEXT.get(kind, "waiting")
            after = f" after {timeout:g}s" if timeout is not None else ""
            prefix = f"{operation}: " if operation else ""
            message = f"{prefix}timed out{after} {what} ({kind} timeout)"
        super().__init__(message)
        self.timeout = timeout
        self.kind = kind
        self.operation = operation


class LMStudioConnectionError(LMStudioError, ConnectionError):
    """The connection to LM Studio could not be made or was lost.

    ``host`` is the server address (without credentials), when known.
    """

    host: str | None

    def __init__(self, message: str | None = None, *, host: str | None = None) -> None:
        self.host = _safe_host(host)
        if message is None:
            message = self._default_message()
        super().__init__(message)

    def _default_message(self) -> str:
        where = f" at {self.host}" if self.host else ""
        return f"Could not connect to LM Studio{where}"


class AuthenticationError(LMStudioConnectionError):
    """LM Studio rejected the connection: the API token is missing or wrong.

    The message names the host, never the token.
    """

    def _default_message(self) -> str:
        where = f" at {self.host}" if self.host else ""
        return f"LM Studio{where} rejected the connection: the API token is missing or wrong"


class ClientClosedError(LMStudioConnectionError):
    """The client was closed while the call was in flight, or before it was made."""

    def _default_message(self) -> str:
        where = f" (connected to {self.host})" if self.host else ""
        return f"The LM Studio client was closed{where}"


class ServerError(LMStudioError):
    """An error reported by the server.

    Attributes mirror the server's error payload: ``title``, ``root_title``,
    ``cause``, ``suggestion``, ``error_data``, ``display_data`` and ``code``
    (``display_data["code"]`` when present). ``operation`` says what was being
    done, e.g. ``"Model load"``; it prefixes the message::

        Model load failed: <title> — <cause> Suggestion: <suggestion>
    """

    title: str
    root_title: str | None
    cause: str | None
    suggestion: str | None
    display_data: dict[str, Any] | None
    error_data: dict[str, Any] | None
    operation: str | None

    def __init__(
        self,
        title: str,
        *,
        root_title: str | None = None,
        cause: str | None = None,
        suggestion: str | None = None,
        display_data: Mapping[str, Any] | None = None,
        error_data: Mapping[str, Any] | None = None,
        operation: str | None = None,
    ) -> None:
        self.title = title
        self.root_title = root_title
        self.cause = cause
        self.suggestion = suggestion
        self.display_data = dict(display_data) if display_data is not None else None
        self.error_data = dict(error_data) if error_data is not None else None
        self.operation = operation
        super().__init__(self._format())

    @property
    def code(self) -> str | None:
        """The machine-readable error kind (``displayData.code``), if any."""
        if self.display_data is None:
            return None
        code = self.display_data.get("code")
        return code if isinstance(code, str) else None

    def _headline(self) -> str:
        return self.title

    def _format(self) -> str:
        text = self._headline()
        if self.operation:
            text = f"{self.operation} failed: {text}"
        if self.cause:
            text += f" — {self.cause}"
        if self.suggestion:
            text += f" Suggestion: {self.suggestion}"
        return text


_SAMPLE_LIMIT = 10
# What a model of each domain is called in messages.
_NOUNS = {"llm": "LLM", "embedding": "embedding model"}


def _noun(domain: str | None, article: bool = False) -> str:
    noun = _NOUNS.get(domain or "", "model")
    return f"{'a' if noun == 'model' else 'an'} {noun}" if article else noun


def _sample_text(
    sample: Sequence[str], total: int | None, label: str, domain: str | None = None
) -> str:
    """``label``: "loaded" or "available"; ``domain``: which models the sample covers
    (LM Studio samples the loaded models of the namespace asked, so an empty sample on
    ``llm`` says no LLM is loaded, not that nothing is), None when unknown."""
    shown = list(sample[:_SAMPLE_LIMIT])
    if total is None or total < len(sample):
        total = len(sample)
    if not shown:
        if label == "loaded":
            return f"no {_noun(domain)} is loaded" if domain in _NOUNS else "no models are loaded"
        return "no models are available"
    text = ", ".join(shown)
    if total > len(shown):
        text += f", … {total} in total"
    return f"{label}: {text}"


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value if isinstance(v, str | int | float)]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _describe_query(query: Mapping[str, Any]) -> str:
    parts: list[str] = []
    if isinstance(query.get("identifier"), str):
        parts.append(f"identifier {query['identifier']!r}")
    if isinstance(query.get("path"), str):
        parts.append(f"path {query['path']!r}")
    if isinstance(query.get("domain"), str):
        parts.append(f"domain {query['domain']!r}")
    if isinstance(query.get("vision"), bool):
        parts.append("vision support" if query["vision"] else "no vision support")
    return " and ".join(parts)


class ModelNotFoundError(ServerError):
    """No model matches what was asked for.

    Raised for the server codes ``generic.noModelMatchingQuery`` and
    ``generic.pathNotFound`` (as the official Python SDK does), and also for
    ``generic.identifierNotFound`` and ``generic.specificModelUnloaded``,
    which mean the same to a user: the model you named is not there. Also
    raised client-side, without a server payload (see :meth:`client_side` and
    :meth:`nothing_loaded`); ``code`` is then ``None``.

    ``subject`` is the model key, identifier or path that was asked about;
    ``available`` is a sample of loaded identifiers or downloaded model keys
    when the server supplied one, and ``total_available`` its full count.
    ``domain`` is the kind of model asked for (``"llm"``, ``"embedding"``), when known.
    """

    subject: str | None
    available: list[str]
    total_available: int | None
    domain: str | None

    def __init__(
        self,
        title: str,
        *,
        subject: str | None = None,
        root_title: str | None = None,
        cause: str | None = None,
        suggestion: str | None = None,
        display_data: Mapping[str, Any] | None = None,
        error_data: Mapping[str, Any] | None = None,
        operation: str | None = None,
        message: str | None = None,
        domain: str | None = None,
    ) -> None:
        self.subject = subject
        self.domain = domain
        self._message = message
        self.available = []
        self.total_available = None
        super().__init__(
            title,
            root_title=root_title,
            cause=cause,
            suggestion=suggestion,
            display_data=display_data,
            error_data=error_data,
            operation=operation,
        )

    @classmethod
    def client_side(
        cls,
        message: str,
        *,
        subject: str | None = None,
        operation: str | None = None,
        domain: str | None = None,
    ) -> ModelNotFoundError:
        """A model-not-found error detected by the client (no server payload)."""
        return cls(message, subject=subject, operation=operation, domain=domain)

    @classmethod
    def nothing_loaded(
        cls, domain: str | None = None, *, operation: str | None = None
    ) -> ModelNotFoundError:
        """ "No LLM is loaded" / "No embedding model is loaded" / "No model is loaded"."""
        return cls(f"No {_noun(domain)} is loaded", operation=operation, domain=domain)

    def _headline(self) -> str:
        if self._message is not None:
            return self._message
        friendly = self._friendly()
        return friendly if friendly is not None else self.title

    def _friendly(self) -> str | None:
        data = self.display_data or {}
        code = self.code
        if code == "generic.noModelMatchingQuery":
            self.available = _str_list(data.get("loadedModelsSample"))
            self.total_available = _int_or_none(data.get("totalLoadedModels"))
            query = data.get("query")
            described = _describe_query(query) if isinstance(query, Mapping) else ""
            if not described and self.subject:
                described = f"identifier {self.subject!r}"
            if not described:
                if not self.available and not self.total_available:
                    return "No model is loaded"
                return (
                    "No loaded model matches the query ("
                    + _sample_text(self.available, self.total_available, "loaded", self.domain)
                    + ")"
                )
            sample = _sample_text(self.available, self.total_available, "loaded", self.domain)
            return f"No loaded model matches {described} ({sample})"
        if code == "generic.identifierNotFound":
            self.available = _str_list(data.get("loadedModelsSample"))
            self.total_available = _int_or_none(data.get("totalLoadedModels"))
            ident = data.get("identifier")
            name = ident if isinstance(ident, str) else self.subject
            sample = _sample_text(self.available, self.total_available, "loaded", self.domain)
            target = f"identifier {name!r}" if name else "the given identifier"
            return f"No loaded model has {target} ({sample})"
        if code == "generic.pathNotFound":
            self.available = _str_list(data.get("availablePathsSample"))
            self.total_available = _int_or_none(data.get("totalModels"))
            path = data.get("path")
            name = path if isinstance(path, str) else self.subject
            sample = _sample_text(self.available, self.total_available, "available")
            target = repr(name) if name else "the given path"
            return f"No downloaded model matches {target} ({sample})"
        if code == "generic.specificModelUnloaded":
            if self.subject:
                return f"The model instance {self.subject!r} is no longer loaded"
            return "The model instance is no longer loaded"
        return None


class ModelUnloadedError(ModelNotFoundError):
    """A prediction ended early because its model instance was unloaded.

    The server stops such a prediction with the stop reason ``modelUnloaded``:
    another client unloaded the model, its TTL expired, or a JIT load evicted
    it. ``result`` holds the partial :class:`~lmstudio_async.PredictionResult`
    (the text generated until then, ``stop_reason == "modelUnloaded"``), or
    ``None`` when nothing was received. ``subject`` is the instance identifier.
    """

    result: PredictionResult | None

    def __init__(
        self,
        message: str | None = None,
        *,
        subject: str | None = None,
        result: PredictionResult | None = None,
        operation: str | None = None,
    ) -> None:
        self.result = result
        if message is None:
            what = f"model instance {subject!r}" if subject else "model instance"
            message = f"The {what} was unloaded before the prediction finished"
        super().__init__(message, subject=subject, operation=operation, message=message)


class DomainMismatchError(ServerError, LMStudioValueError):
    """The model named is of another kind than the one asked for: an LLM's key given to
    ``client.embedding`` or a pool's ``embedding()``, an embedding model's to ``client.llm``.

    Raised for the server code ``generic.domainMismatch``, and by the client when it finds
    the mismatch first (``code`` is then ``None``). It is also an
    :class:`LMStudioValueError`: the input was wrong, and the model *is* downloaded, so it
    is not a :class:`ModelNotFoundError`. ``model`` is the key or path named,
    ``actual_domain`` the model's kind and ``expected_domain`` the kind asked for
    (``"llm"``, ``"embedding"``), each when known.
    """

    model: str | None
    actual_domain: str | None
    expected_domain: str | None

    def __init__(
        self,
        title: str,
        *,
        model: str | None = None,
        actual_domain: str | None = None,
        expected_domain: str | None = None,
        **kwargs: Any,
    ) -> None:
        data = kwargs.get("display_data")
        data = data if isinstance(data, Mapping) else {}
        self.model = model if model is not None else _str_or_none(data.get("path"))
        self.actual_domain = (
            actual_domain if actual_domain is not None else _str_or_none(data.get("actualDomain"))
        )
        self.expected_domain = (
            expected_domain
            if expected_domain is not None
            else _str_or_none(data.get("expectedDomain"))
        )
        super().__init__(title, **kwargs)

    @classmethod
    def client_side(
        cls,
        model: str,
        actual_domain: str,
        expected_domain: str,
        *,
        operation: str | None = None,
        suggestion: str | None = None,
    ) -> DomainMismatchError:
        """The mismatch found by the client, before asking the server."""
        return cls(
            f"{model!r} is {_noun(actual_domain, True)}, not {_noun(expected_domain, True)}.",
            model=model,
            actual_domain=actual_domain,
            expected_domain=expected_domain,
            operation=operation,
            suggestion=suggestion,
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class InsufficientMemoryError(ServerError):
    """The server refused to load a model because there is not enough memory.

    How the server's error is recognised lives in
    ``lmstudio_async._protocol.errors`` (partly a guess; see docs/stand-in.md).
    """


class IdentifierTakenError(ServerError):
    """A load asked for an identifier that a loaded instance already has.

    ``identifier`` is the identifier asked for, when known.
    """

    identifier: str | None

    def __init__(self, title: str, *, identifier: str | None = None, **kwargs: Any) -> None:
        if identifier is None:
            for source in (kwargs.get("display_data"), kwargs.get("error_data")):
                if isinstance(source, Mapping) and isinstance(source.get("identifier"), str):
                    identifier = str(source["identifier"])
                    break
        self.identifier = identifier
        super().__init__(title, **kwargs)


class DeviceNotFoundError(ServerError):
    """``device=`` names no LM Link device the server knows.

    How the server's error is recognised lives in ``lmstudio_async._protocol.errors``
    (a guess; see docs/stand-in.md).
    """


class PoolTimeoutError(LMStudioTimeoutError):
    """A model pool lease waited for memory or a load past its deadline."""


class PoolFullError(LMStudioError):
    """A model pool refused a lease at once: its wait queue (``max_waiting``) is full."""


class HostDownError(LMStudioConnectionError):
    """A model pool host is marked down: its connection dropped and has not come back."""

    def _default_message(self) -> str:
        where = f" {self.host}" if self.host else ""
        return f"The LM Studio host{where} is down"


class VisionNotSupportedError(ServerError):
    """A chat with images went to a model that cannot see them (its ``vision`` is false).

    Raised before sending when the handle's model info says so, else mapped from the
    server's error (see ``lmstudio_async._protocol.errors``). ``subject`` is the model.
    """

    subject: str | None

    def __init__(self, title: str, *, subject: str | None = None, **kwargs: Any) -> None:
        self.subject = subject
        super().__init__(title, **kwargs)


class DraftModelError(ServerError):
    """``PredictionConfig.draft_model`` names no downloaded model, or one that cannot
    draft for this model (LM Studio's rule; the stand-in's is in docs/stand-in.md).

    ``draft_model`` is the key asked for, when known.
    """

    draft_model: str | None

    def __init__(self, title: str, *, draft_model: str | None = None, **kwargs: Any) -> None:
        self.draft_model = draft_model
        super().__init__(title, **kwargs)


class PresetNotFoundError(ServerError):
    """``preset=`` names no preset LM Studio knows.

    ``preset`` is the identifier asked for; ``available`` a sample of known preset
    identifiers when the server sent one.
    """

    preset: str | None
    available: list[str]

    def __init__(
        self,
        title: str,
        *,
        preset: str | None = None,
        available: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        self.preset = preset
        self.available = list(available)
        super().__init__(title, **kwargs)


class UnsupportedEndpointError(ServerError):
    """The server does not know the protocol endpoint a call needs (``endpoint``): an
    LM Studio older than the feature. LM Studio answers such a request only with a
    warning; the call fails at once with this error instead of waiting for a deadline,
    and later calls to that endpoint on the same connection fail before anything is sent.
    """

    endpoint: str

    def __init__(self, title: str, *, endpoint: str, **kwargs: Any) -> None:
        self.endpoint = endpoint
        super().__init__(title, **kwargs)


class StructuredOutputError(LMStudioError, ValueError):
    """The model's reply does not match the ``response_format`` type it was given.

    ``content`` is the raw reply text; ``result`` the full
    :class:`~lmstudio_async.PredictionResult` (stats and all); ``target`` the type asked for.
    """

    content: str
    result: PredictionResult | None
    target: Any

    def __init__(
        self,
        message: str,
        *,
        content: str,
        result: PredictionResult | None = None,
        target: Any = None,
    ) -> None:
        super().__init__(message)
        self.content = content
        self.result = result
        self.target = target


class ToolCallError(LMStudioError):
    """``act()`` got a tool call it can neither run nor report back to the model: LM Studio
    could not parse the model's tool call, or the model asked for a tool in the last
    allowed round. (A tool that raises, an unknown tool name or bad arguments are reported
    to the model instead; ``handle_invalid_tool_request`` may turn those into this error.)

    ``request`` is the :class:`~lmstudio_async.ToolCallRequest` concerned, when there is one.
    """

    request: Any

    def __init__(self, message: str, *, request: Any = None) -> None:
        super().__init__(message)
        self.request = request
