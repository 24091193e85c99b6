"""LM Studio-style errors (``SerializedLMSExtendedError``) raised by the stand-in's handlers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SAMPLE_SIZE = 10


class StandInError(Exception):
    """An error that becomes an ``rpcError`` / ``channelError`` payload."""

    def __init__(
        self,
        title: str,
        *,
        cause: str | None = None,
        suggestion: str | None = None,
        display_data: dict[str, Any] | None = None,
        error_data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(title)
        self.title = title
        self.cause = cause
        self.suggestion = suggestion
        self.display_data = display_data
        self.error_data = error_data

    def serialize(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"title": self.title, "rootTitle": self.title}
        if self.cause is not None:
            payload["cause"] = self.cause
        if self.suggestion is not None:
            payload["suggestion"] = self.suggestion
        if self.error_data is not None:
            payload["errorData"] = self.error_data
        if self.display_data is not None:
            payload["displayData"] = self.display_data
        return payload


def no_model_matching_query(query: Mapping[str, Any], loaded: Sequence[str]) -> StandInError:
    return StandInError(
        "No loaded model matches the given query",
        display_data={
            "code": "generic.noModelMatchingQuery",
            "query": dict(query),
            "loadedModelsSample": list(loaded[:SAMPLE_SIZE]),
            "totalLoadedModels": len(loaded),
        },
    )


def path_not_found(path: str, available: Sequence[str]) -> StandInError:
    return StandInError(
        f'No downloaded model matches "{path}"',
        display_data={
            "code": "generic.pathNotFound",
            "path": path,
            "availablePathsSample": list(available[:SAMPLE_SIZE]),
            "totalModels": len(available),
        },
    )


def domain_mismatch(path: str, actual: str, expected: str) -> StandInError:
    return StandInError(
        f'Model "{path}" is a model of type "{actual}", but a model of type "{expected}" '
        "was expected",
        display_data={
            "code": "generic.domainMismatch",
            "path": path,
            "actualDomain": actual,
            "expectedDomain": expected,
        },
    )


def specific_model_unloaded() -> StandInError:
    return StandInError(
        "The model instance this handle refers to has been unloaded",
        display_data={"code": "generic.specificModelUnloaded"},
    )


# The three errors below carry no ``displayData.code``: LM Studio is not known to send one for
# them, so clients recognise them by their text (lmstudio_async/_protocol/errors.py keeps the
# patterns; docs/stand-in.md says which parts are guesses).


def identifier_exists(identifier: str) -> StandInError:
    # No errorData: LM Studio's message is the title alone (the official suite matches it
    # on one line: "Model load error.*already exists").
    return StandInError(f'An instance with identifier "{identifier}" already exists')


def insufficient_memory(
    model_key: str,
    memory: Any,
    *,
    free: int,
    budget: int,
    device: str | None = None,
) -> StandInError:
    """The guardrail refusal of a load (LM Studio words it "Model loading was stopped due to
    insufficient system resources"; the stand-in keeps its own, shorter title)."""
    gb = 1_000_000_000  # the stand-in's GB (_kvconfig.BYTES_PER_GB)
    where = "memory budget" if device is None else f'memory budget of device "{device}"'
    return StandInError(
        f'Failed to load model "{model_key}": insufficient memory',
        cause=(
            f'Loading "{model_key}" needs about {memory.total_bytes / gb:.2f} GB '
            f"(weights {memory.model_bytes / gb:.2f} GB + context "
            f"{memory.context_bytes / gb:.2f} GB), but only {free / gb:.2f} GB of the "
            f"{budget / gb:g} GB {where} is free."
        ),
        suggestion="Unload other models or load with a smaller context length.",
        error_data={
            "requiredBytes": memory.total_bytes,
            "freeBytes": free,
            "deviceIdentifier": device,
        },
    )


def load_cancelled(model_key: str) -> StandInError:
    return StandInError(
        "Model load was cancelled",
        cause=f'The client cancelled loading "{model_key}"; nothing was loaded.',
    )


def unknown_device(device: str, known: Sequence[str] = ()) -> StandInError:
    names = ", ".join(f'"{n}"' for n in known) if known else "none"
    return StandInError(
        f'Unknown device "{device}"',
        cause=f"The LM Link devices this server knows: {names}. Use null for the local device.",
        error_data={"deviceIdentifier": device},
    )
