"""Exception tree, server-error decoding and mapping."""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmstudio_async._protocol.errors import (
    MALFORMED_ERROR_TITLE,
    MODEL_NOT_FOUND_CODES,
    SerializedError,
    decode_serialized_error,
    map_server_error,
)
from lmstudio_async.errors import (
    AuthenticationError,
    ClientClosedError,
    ConfigError,
    DomainMismatchError,
    IdentifierTakenError,
    LMStudioConnectionError,
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    ModelNotFoundError,
    ProtocolError,
    ServerError,
    scrub,
)

TOKEN = "sk-lm-SECRETTOKEN:abcdef0123456789"

# protocol.md §3.1 example payload.
UNLOAD_UNKNOWN = (
    b'{"title": "No loaded model matches the given query",'
    b' "rootTitle": "No loaded model matches the given query",'
    b' "displayData": {"code": "generic.noModelMatchingQuery",'
    b' "query": {"identifier": "No such model"},'
    b' "loadedModelsSample": ["llama-3.2-1b-instruct", "qwen2.5-7b-instruct-1m"],'
    b' "totalLoadedModels": 2}}'
)


# --------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (LMStudioValueError, (LMStudioError, ValueError)),
        (ConfigError, (LMStudioValueError, ValueError)),
        (ServerError, (LMStudioError,)),
        (ModelNotFoundError, (ServerError,)),
        (ProtocolError, (LMStudioError,)),
        (LMStudioTimeoutError, (LMStudioError, TimeoutError)),
        (LMStudioConnectionError, (LMStudioError, ConnectionError)),
        (AuthenticationError, (LMStudioConnectionError, ConnectionError)),
        (ClientClosedError, (LMStudioConnectionError, ConnectionError)),
    ],
)
def test_hierarchy(cls: type[BaseException], bases: tuple[type[BaseException], ...]) -> None:
    for base in bases:
        assert issubclass(cls, base)
    assert issubclass(cls, LMStudioError)


def test_timeout_error_is_builtin_timeout() -> None:
    assert issubclass(LMStudioTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError):
        raise LMStudioTimeoutError(timeout=1.5, kind="idle")


def test_config_error_field() -> None:
    err = ConfigError("LlmLoadConfig.seed: expected int >= -1, got -2", field="seed")
    assert err.field == "seed"
    assert isinstance(err, ValueError)
    assert str(err) == "LlmLoadConfig.seed: expected int >= -1, got -2"
    assert ConfigError("x").field is None


# --------------------------------------------------------------------------- messages


def test_timeout_default_messages() -> None:
    assert str(LMStudioTimeoutError(timeout=2, kind="idle")) == (
        "timed out after 2s waiting for the server to respond (idle timeout)"
    )
    err = LMStudioTimeoutError(timeout=0.5, kind="connect", operation="Connect")
    assert str(err) == "Connect: timed out after 0.5s connecting to LM Studio (connect timeout)"
    assert err.timeout == 0.5
    assert err.kind == "connect"
    assert LMStudioTimeoutError().kind == "total"
    assert LMStudioTimeoutError("custom", timeout=3.0).timeout == 3.0
    assert str(LMStudioTimeoutError("custom")) == "custom"


def test_connection_error_messages() -> None:
    assert str(LMStudioConnectionError(host="127.0.0.1:1234")) == (
        "Could not connect to LM Studio at 127.0.0.1:1234"
    )
    assert str(LMStudioConnectionError()) == "Could not connect to LM Studio"
    assert str(LMStudioConnectionError("boom", host="h")) == "boom"
    assert LMStudioConnectionError("boom", host="h").host == "h"


def test_authentication_error_message_names_host() -> None:
    err = AuthenticationError(host="localhost:1234")
    assert "localhost:1234" in str(err)
    assert "API token" in str(err)
    assert err.host == "localhost:1234"


def test_client_closed_error() -> None:
    assert str(ClientClosedError()) == "The LM Studio client was closed"
    assert "localhost" in str(ClientClosedError(host="localhost:1234"))


@pytest.mark.parametrize(
    "host",
    [
        f"ws://user:{TOKEN}@localhost:1234",
        f"http://{TOKEN}@localhost:1234/path",
        f"user:{TOKEN}@localhost:1234",
        f"{TOKEN}@localhost",
    ],
)
@pytest.mark.parametrize("cls", [LMStudioConnectionError, AuthenticationError, ClientClosedError])
def test_host_credentials_never_leak(cls: type[LMStudioConnectionError], host: str) -> None:
    err = cls(host=host)
    for text in (str(err), repr(err), str(err.host), repr(err.__dict__)):
        assert TOKEN not in text
        assert "SECRETTOKEN" not in text
    assert err.host is not None
    assert "localhost" in err.host


def test_safe_host_keeps_plain_hosts() -> None:
    assert LMStudioConnectionError(host="ws://localhost:1234/llm").host == "ws://localhost:1234/llm"
    assert LMStudioConnectionError(host="127.0.0.1").host == "127.0.0.1"


def test_scrub() -> None:
    assert scrub(f"bad token {TOKEN}!", [TOKEN]) == "bad token ***!"
    assert scrub("nothing", [None, ""]) == "nothing"


def test_server_error_str() -> None:
    err = ServerError(
        "Failed to load model",
        cause="Not enough memory",
        suggestion="Try a smaller context length",
        operation="Model load",
    )
    assert str(err) == (
        "Model load failed: Failed to load model — Not enough memory "
        "Suggestion: Try a smaller context length"
    )
    assert err.code is None
    assert str(ServerError("Oops")) == "Oops"
    assert str(ServerError("Oops", operation="Unload")) == "Unload failed: Oops"


def test_server_error_code_and_attrs() -> None:
    err = ServerError(
        "t",
        root_title="r",
        display_data={"code": "generic.domainMismatch", "path": "p"},
        error_data={"x": 1},
        operation="RPC getModelInfo",
    )
    assert err.code == "generic.domainMismatch"
    assert err.root_title == "r"
    assert err.error_data == {"x": 1}
    assert err.operation == "RPC getModelInfo"
    assert ServerError("t", display_data={"code": 5}).code is None


@pytest.mark.parametrize(
    "err",
    [
        ServerError("t", cause="c", operation="op", display_data={"code": "x"}),
        ModelNotFoundError("t", subject="foo", operation="Unload"),
        ModelNotFoundError.nothing_loaded("llm"),
        DomainMismatchError.client_side("m", "llm", "embedding", suggestion="s"),
        LMStudioTimeoutError(timeout=1.0, kind="idle"),
        AuthenticationError(host="h"),
        ClientClosedError(host="h"),
        ConfigError("m", field="f"),
        ProtocolError("p"),
    ],
)
def test_pickle_round_trip(err: LMStudioError) -> None:
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert str(clone) == str(err)
    assert clone.__dict__ == err.__dict__


# --------------------------------------------------------------------------- model not found


def test_model_not_found_protocol_example() -> None:
    err = map_server_error(decode_serialized_error(UNLOAD_UNKNOWN), operation="Unload")
    assert type(err) is ModelNotFoundError
    assert str(err) == (
        "Unload failed: No loaded model matches identifier 'No such model' "
        "(loaded: llama-3.2-1b-instruct, qwen2.5-7b-instruct-1m)"
    )
    assert err.code == "generic.noModelMatchingQuery"
    assert err.title == "No loaded model matches the given query"
    assert err.available == ["llama-3.2-1b-instruct", "qwen2.5-7b-instruct-1m"]
    assert err.total_available == 2


def test_model_not_found_empty_query() -> None:
    payload = {
        "title": "No model loaded",
        "displayData": {
            "code": "generic.noModelMatchingQuery",
            "query": {},
            "loadedModelsSample": [],
            "totalLoadedModels": 0,
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="Get model")
    assert str(err) == "Get model failed: No model is loaded"


def test_model_not_found_query_with_nothing_loaded() -> None:
    payload = {
        "displayData": {
            "code": "generic.noModelMatchingQuery",
            "query": {"identifier": "foo"},
            "loadedModelsSample": [],
            "totalLoadedModels": 0,
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="Unload")
    assert (
        str(err) == "Unload failed: No loaded model matches identifier 'foo' (no models are loaded)"
    )


def test_model_not_found_query_path_and_domain() -> None:
    payload = {
        "displayData": {
            "code": "generic.noModelMatchingQuery",
            "query": {"path": "a/b", "domain": "llm", "vision": True},
            "loadedModelsSample": ["x"],
            "totalLoadedModels": 1,
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="RPC getModelInfo")
    assert str(err) == (
        "RPC getModelInfo failed: No loaded model matches path 'a/b' and domain 'llm' "
        "and vision support (loaded: x)"
    )


def test_model_not_found_uses_subject_when_query_missing() -> None:
    payload = {"title": "t", "displayData": {"code": "generic.noModelMatchingQuery"}}
    err = map_server_error(decode_serialized_error(payload), operation="Unload", subject="my-id")
    assert "identifier 'my-id'" in str(err)
    assert isinstance(err, ModelNotFoundError)
    assert err.subject == "my-id"


def test_path_not_found_message_truncates_sample() -> None:
    payload = {
        "title": "Path not found",
        "displayData": {
            "code": "generic.pathNotFound",
            "path": "foo",
            "availablePathsSample": ["a", "b", "c"],
            "totalModels": 5,
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="Model load")
    assert type(err) is ModelNotFoundError
    assert (
        str(err)
        == "Model load failed: No downloaded model matches 'foo' (available: a, b, c, … 5 in total)"
    )


def test_path_not_found_long_sample_is_capped() -> None:
    names = [f"m{i}" for i in range(30)]
    payload = {
        "displayData": {
            "code": "generic.pathNotFound",
            "path": "foo",
            "availablePathsSample": names,
            "totalModels": 30,
        },
    }
    text = str(map_server_error(decode_serialized_error(payload), operation="Model load"))
    assert "m9," in text
    assert "m10" not in text
    assert "30 in total" in text


def test_identifier_not_found_is_model_not_found() -> None:
    payload = {
        "title": "Identifier not found",
        "displayData": {
            "code": "generic.identifierNotFound",
            "identifier": "ghost",
            "loadedModelsSample": ["a"],
            "totalLoadedModels": 1,
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="Unload")
    assert type(err) is ModelNotFoundError
    assert str(err) == "Unload failed: No loaded model has identifier 'ghost' (loaded: a)"


def test_specific_model_unloaded() -> None:
    payload = {"title": "Model unloaded", "displayData": {"code": "generic.specificModelUnloaded"}}
    err = map_server_error(decode_serialized_error(payload), operation="Predict", subject="abc")
    assert type(err) is ModelNotFoundError
    assert str(err) == "Predict failed: The model instance 'abc' is no longer loaded"
    err2 = map_server_error(decode_serialized_error(payload), operation="Predict")
    assert str(err2) == "Predict failed: The model instance is no longer loaded"


def test_model_not_found_codes() -> None:
    assert {
        "generic.noModelMatchingQuery",
        "generic.pathNotFound",
        "generic.identifierNotFound",
        "generic.specificModelUnloaded",
    } == MODEL_NOT_FOUND_CODES


def test_model_not_found_client_side() -> None:
    err = ModelNotFoundError.client_side("Model instance 'x' is no longer loaded", subject="x")
    assert str(err) == "Model instance 'x' is no longer loaded"
    assert err.code is None
    assert err.subject == "x"
    assert err.display_data is None
    err = ModelNotFoundError.client_side("gone", operation="Get info")
    assert str(err) == "Get info failed: gone"


@pytest.mark.parametrize(
    ("domain", "text"),
    [
        ("llm", "No LLM is loaded"),
        ("embedding", "No embedding model is loaded"),
        (None, "No model is loaded"),
    ],
)
def test_nothing_loaded(domain: str | None, text: str) -> None:
    assert str(ModelNotFoundError.nothing_loaded(domain)) == text
    assert (
        str(ModelNotFoundError.nothing_loaded(domain, operation="Get model"))
        == f"Get model failed: {text}"
    )


# --------------------------------------------------------------------------- other server errors


def test_duplicate_identifier_names_identifier() -> None:
    title = 'An instance with identifier "x" already exists'
    err = map_server_error(
        decode_serialized_error({"title": title, "rootTitle": title, "stack": "Error: ..."}),
        operation="Model load",
        subject="x",
    )
    assert type(err) is IdentifierTakenError  # issue 15: typed (see test_error_classes.py)
    assert err.identifier == "x"
    assert str(err) == 'Model load failed: An instance with identifier "x" already exists'
    assert '"x"' in str(err)
    assert "stack" not in str(err).lower()


def test_domain_mismatch_is_its_own_value_error() -> None:
    payload = {
        "title": "Domain mismatch",
        "cause": "The model is an embedding model",
        "suggestion": "Use client.embedding",
        "displayData": {
            "code": "generic.domainMismatch",
            "path": "p",
            "actualDomain": "embedding",
            "expectedDomain": "llm",
        },
    }
    err = map_server_error(decode_serialized_error(payload), operation="Model load")
    # The model is downloaded, only of another kind: not a ModelNotFoundError, and bad input.
    assert type(err) is DomainMismatchError
    assert isinstance(err, ServerError)
    assert isinstance(err, LMStudioValueError)
    assert not isinstance(err, ModelNotFoundError)
    assert (err.model, err.actual_domain, err.expected_domain) == ("p", "embedding", "llm")
    assert err.code == "generic.domainMismatch"
    assert str(err) == (
        "Model load failed: Domain mismatch — The model is an embedding model "
        "Suggestion: Use client.embedding"
    )


def test_title_fallbacks() -> None:
    assert map_server_error(SerializedError(root_title="R"), operation="op").title == "R"
    assert str(map_server_error(SerializedError(), operation="op")) == "op failed: Unknown error"


def test_map_server_error_scrubs_secrets() -> None:
    payload = {
        "title": f"Invalid token {TOKEN}",
        "rootTitle": f"Invalid token {TOKEN}",
        "cause": f"token={TOKEN}",
        "suggestion": f"replace {TOKEN}",
        "errorData": {"t": TOKEN, "nested": [TOKEN]},
        "displayData": {"code": "generic.noModelMatchingQuery", "query": {"identifier": TOKEN}},
    }
    err = map_server_error(
        decode_serialized_error(payload), operation="Auth", secrets=[TOKEN, None]
    )
    for text in (str(err), repr(err), repr(err.__dict__)):
        assert TOKEN not in text
    assert "***" in str(err)


# --------------------------------------------------------------------------- decoding


def test_decode_full_payload() -> None:
    err = decode_serialized_error(
        b'{"title":"T","rootTitle":"R","cause":"C","suggestion":"S","errorData":{"a":1},'
        b'"displayData":{"code":"x"},"stack":"st","extra":true}'
    )
    assert err == SerializedError(
        title="T",
        root_title="R",
        cause="C",
        suggestion="S",
        error_data={"a": 1},
        display_data={"code": "x"},
        stack="st",
    )


def test_decode_from_raw_and_str() -> None:
    raw = msgspec.Raw(b'{"title":"T"}')
    assert decode_serialized_error(raw).title == "T"
    assert decode_serialized_error('{"title":"T"}').title == "T"


def test_decode_wrong_types_are_dropped() -> None:
    err = decode_serialized_error(
        b'{"title":5,"rootTitle":"R","cause":["x"],"displayData":"nope","errorData":{"a":1}}'
    )
    assert err.title is None
    assert err.root_title == "R"
    assert err.cause is None
    assert err.display_data is None
    assert err.error_data == {"a": 1}


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1,2]", b"42", b"null", None, b"\xff\xfe", "{", msgspec.Raw(b"[")],
)
def test_decode_never_raises(raw: Any) -> None:
    err = decode_serialized_error(raw)
    assert err.title == MALFORMED_ERROR_TITLE
    mapped = map_server_error(err, operation="RPC x")
    assert str(mapped).startswith("RPC x failed: Malformed server error")


def test_decode_bare_string() -> None:
    assert decode_serialized_error(b'"boom"').title == "boom"


def test_encode_omits_defaults() -> None:
    assert msgspec.json.encode(SerializedError(title="T", root_title="T")) == (
        b'{"title":"T","rootTitle":"T"}'
    )


_text = st.text(max_size=30)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)
_serialized = st.builds(
    SerializedError,
    title=st.none() | _text,
    root_title=st.none() | _text,
    cause=st.none() | _text,
    suggestion=st.none() | _text,
    error_data=st.none() | st.dictionaries(_text, _json, max_size=3),
    display_data=st.none() | st.dictionaries(_text, _json, max_size=3),
    stack=st.none() | _text,
)


@settings(max_examples=200, deadline=None)
@given(_serialized)
def test_serialized_error_round_trip(err: SerializedError) -> None:
    assert decode_serialized_error(msgspec.json.encode(err)) == err


@settings(max_examples=200, deadline=None)
@given(_json)
def test_decode_arbitrary_json_never_raises(value: Any) -> None:
    err = decode_serialized_error(msgspec.json.encode(value))
    assert isinstance(err, SerializedError)
    assert isinstance(map_server_error(err, operation="op"), ServerError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_decode_arbitrary_bytes_never_raises(raw: bytes) -> None:
    assert isinstance(decode_serialized_error(raw), SerializedError)


@settings(max_examples=200, deadline=None)
@given(
    code=st.sampled_from([*sorted(MODEL_NOT_FOUND_CODES), "generic.other", "x"]),
    data=st.dictionaries(
        st.sampled_from(
            [
                "query",
                "loadedModelsSample",
                "totalLoadedModels",
                "path",
                "availablePathsSample",
                "totalModels",
                "identifier",
            ]
        ),
        _json,
        max_size=5,
    ),
)
def test_mapping_odd_display_data_never_raises(code: str, data: dict[str, Any]) -> None:
    err = map_server_error(
        SerializedError(title="T", display_data={"code": code, **data}), operation="op", subject="s"
    )
    assert str(err).startswith("op failed: ")
    assert isinstance(err, ModelNotFoundError) == (code in MODEL_NOT_FOUND_CODES)
