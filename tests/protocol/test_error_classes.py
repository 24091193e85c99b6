"""Which typed error a server error becomes (``_protocol/errors.py``), and the new classes."""

from __future__ import annotations

import pickle

import pytest

import lmstudio_async
from lmstudio_async._protocol.errors import (
    LOAD_ERROR_RULES,
    SerializedError,
    classify_load_error,
    decode_serialized_error,
    map_server_error,
)
from lmstudio_async.errors import (
    DeviceNotFoundError,
    HostDownError,
    IdentifierTakenError,
    InsufficientMemoryError,
    LMStudioConnectionError,
    LMStudioError,
    LMStudioTimeoutError,
    ModelNotFoundError,
    ModelUnloadedError,
    PoolFullError,
    PoolTimeoutError,
    ServerError,
)

# What real LM Studio releases are reported to say (bug tracker logs), and the stand-in's words.
MEMORY_TITLES = [
    "Model loading was stopped due to insufficient system resources. Under the current "
    "settings, this model requires approximately 273.25 GB of memory",
    "Error: Model loading aborted due to insufficient system resources. Overloading the "
    "system will likely cause it to freeze.",
    "Not enough resources to load the model with the current settings",
    "llama.cpp: cudaMalloc failed: out of memory",
    "error loading model: unable to allocate backend buffer",
    'Failed to load model "qwen2.5-7b-instruct": insufficient memory',
]
TAKEN_TITLES = [
    'An instance with identifier "fast" already exists',
    "Model load error: identifier 'x' is already in use",
]
DEVICE_TITLES = ['Unknown device "gpu-box"', "LM Link device abc123 not found"]
OTHER_TITLES = [
    "Model load was cancelled",
    "File already exists",  # "already exists" alone counts only for a load
    "Failed to parse the prompt template",
    "",
]


def _map(title: str, **extra: object) -> ServerError:
    raw = SerializedError(title=title, **extra)  # type: ignore[arg-type]
    return map_server_error(raw, operation="Estimate")


@pytest.mark.parametrize("title", MEMORY_TITLES)
def test_insufficient_memory_is_recognised_by_its_text(title: str) -> None:
    error = _map(title)
    assert type(error) is InsufficientMemoryError
    assert error.title == title
    assert str(error).startswith("Estimate failed: ")


def test_insufficient_memory_in_the_cause_counts_too() -> None:
    error = _map("Failed to load the model", cause="insufficient system resources")
    assert type(error) is InsufficientMemoryError


@pytest.mark.parametrize("title", TAKEN_TITLES)
def test_identifier_taken_is_recognised(title: str) -> None:
    error = _map(title, error_data={"identifier": "fast"})
    assert type(error) is IdentifierTakenError
    assert isinstance(error, IdentifierTakenError)
    assert error.identifier == "fast"


def test_identifier_taken_without_data_names_the_subject() -> None:
    error = _map('An instance with identifier "fast" already exists')
    assert isinstance(error, IdentifierTakenError)
    assert error.identifier is None
    raw = SerializedError(title='An instance with identifier "fast" already exists')
    named = map_server_error(raw, operation="Model load", subject="fast")
    assert isinstance(named, IdentifierTakenError)
    assert named.identifier == "fast"


def test_already_exists_alone_counts_only_for_a_load() -> None:
    raw = SerializedError(title='Model "x" already exists')
    assert type(map_server_error(raw, operation="Model load")) is IdentifierTakenError
    assert type(map_server_error(raw, operation="Get-or-load")) is ServerError
    assert type(map_server_error(raw, operation="Download")) is ServerError


@pytest.mark.parametrize("title", DEVICE_TITLES)
def test_unknown_device_is_recognised(title: str) -> None:
    assert type(_map(title)) is DeviceNotFoundError


@pytest.mark.parametrize("title", OTHER_TITLES)
def test_other_titles_stay_plain_server_errors(title: str) -> None:
    assert type(_map(title)) is ServerError


@pytest.mark.parametrize(
    ("operation", "title"),
    [
        ("Image upload", 'Cannot upload "computer-vision.png": not a readable image'),
        ("Image upload", 'Cannot upload "device-photo.png": device not found in the file'),
        ("Chat response", 'File "000002-computer-vision.png" not found'),
        ("Chat response", 'File "000003-device-photo.png" not found'),
        ("Chat response", "Out of memory while building the prompt"),
        ("Get info of 'llama-3.2-11b-vision-instruct'", "No such instance"),
        ("Model search", "The draft model catalogue is unavailable"),
    ],
)
def test_names_in_other_operations_errors_do_not_pick_a_class(operation: str, title: str) -> None:
    # The text rules guess at code-less errors of loads (memory, identifier, device) and of
    # predictions (vision, draft model) only, and not from a name that merely contains a
    # word such as "vision" or "device".
    raw = SerializedError(title=title)
    assert type(map_server_error(raw, operation=operation)) is ServerError


def test_a_code_beats_the_text() -> None:
    # A model-not-found code wins even when the text mentions memory.
    error = _map(
        "insufficient memory",
        display_data={"code": "generic.noModelMatchingQuery", "query": {}},
    )
    assert type(error) is ModelNotFoundError
    # An unknown code is not second-guessed from the text.
    raw = SerializedError(title="insufficient memory", display_data={"code": "x.other"})
    assert classify_load_error(raw, "x.other") is None


def test_decoded_wire_payload_maps_the_same() -> None:
    wire = b'{"title":"An instance with identifier \\"a\\" already exists","rootTitle":"x"}'
    error = map_server_error(decode_serialized_error(wire), operation="Model load")
    assert type(error) is IdentifierTakenError


def test_every_rule_is_documented_and_marked() -> None:
    for rule in LOAD_ERROR_RULES:
        assert issubclass(rule.cls, ServerError)
        assert rule.source
        assert rule.guess  # none of them is confirmed against a real LM Studio yet


def test_model_unloaded_error_carries_the_partial_result_and_pickles() -> None:
    error = ModelUnloadedError(subject="m", result=None, operation="Chat response")
    assert isinstance(error, ModelNotFoundError)
    assert "'m'" in str(error)
    assert "unloaded" in str(error)
    assert error.result is None
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ModelUnloadedError
    assert again.subject == "m"


def test_pool_error_classes() -> None:
    assert issubclass(PoolTimeoutError, LMStudioTimeoutError)
    assert issubclass(PoolTimeoutError, TimeoutError)
    assert issubclass(PoolFullError, LMStudioError)
    assert issubclass(HostDownError, LMStudioConnectionError)
    down = HostDownError(host="user:pw@box:1234")
    assert "pw" not in str(down)
    assert down.host == "box:1234"
    for cls in (
        ModelUnloadedError,
        InsufficientMemoryError,
        IdentifierTakenError,
        DeviceNotFoundError,
        PoolTimeoutError,
        PoolFullError,
        HostDownError,
    ):
        assert getattr(lmstudio_async, cls.__name__) is cls
        assert cls.__name__ in lmstudio_async.__all__
