"""Speculative decoding for the stand-in: which draft models a model accepts, and their stats.

A prediction names its draft model in ``llm.prediction.speculativeDecoding.draftModel`` (a
model key or path of a *downloaded* model; it need not be loaded). The rule (a guess: LM
Studio's check lives in its closed server; docs/stand-in.md, "Speculative decoding"):

* the draft must resolve to a downloaded LLM (else ``generic.draftModelNotFound``);
* it must be a different model, of the same ``architecture`` (standing in for "same
  tokenizer"), and smaller on disk (``sizeBytes``) than the main model (else
  ``generic.draftModelIncompatible``).

Statistics are deterministic: every generated token is proposed by the draft; a token is
accepted unless a hash of (draft key, token index, token text) falls in the lowest quarter,
so about three in four are accepted. Accepted tokens' fragments have ``containsDrafted``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ._errors import StandInError
from ._state import ModelState

DRAFT_KEY = "llm.prediction.speculativeDecoding.draftModel"


def draft_not_found(draft: str) -> StandInError:
    return StandInError(
        f'Draft model "{draft}" not found',
        cause="No downloaded LLM has this model key or path.",
        display_data={"code": "generic.draftModelNotFound", "draftModel": draft},
    )


def draft_incompatible(draft: str, main: str, reason: str) -> StandInError:
    return StandInError(
        f'Draft model "{draft}" is not compatible with "{main}"',
        cause=reason,
        suggestion="Use a smaller model of the same architecture as the draft model.",
        display_data={"code": "generic.draftModelIncompatible", "draftModel": draft},
    )


def requested_draft(config: dict[str, Any]) -> str | None:
    value = config.get(DRAFT_KEY)
    return value if isinstance(value, str) and value else None


def check_draft(state: ModelState, main: dict[str, Any], draft: str) -> dict[str, Any]:
    """The downloaded model ``draft`` names, if it may draft for ``main``; else raises."""
    low = draft.lower()
    candidates = [m for m in state.catalog if m.get("type") == "llm"]
    found = next((m for m in candidates if str(m["modelKey"]).lower() == low), None)
    if found is None:
        found = next(
            (
                m
                for m in candidates
                if str(m["path"]).lower() == low
                or str(m["path"]).lower().startswith(low + "/")
                or str(m.get("indexedModelIdentifier", "")).lower().startswith(low + "/")
            ),
            None,
        )
    if found is None:
        raise draft_not_found(draft)
    main_key = str(main["modelKey"])
    if str(found["modelKey"]).lower() == main_key.lower():
        raise draft_incompatible(draft, main_key, "A model cannot draft for itself.")
    arch, main_arch = found.get("architecture"), main.get("architecture")
    if not arch or str(arch).lower() != str(main_arch).lower():
        raise draft_incompatible(
            draft, main_key, f'Architectures differ ("{arch}" vs "{main_arch}").'
        )
    if int(found["sizeBytes"]) >= int(main["sizeBytes"]):
        raise draft_incompatible(
            draft, main_key, "The draft model is not smaller than the main model."
        )
    return found


def accepted(draft_key: str, index: int, piece: str) -> bool:
    """Whether the draft's proposal for token ``index`` was accepted (deterministic)."""
    digest = hashlib.blake2s(f"{draft_key}\0{index}\0{piece}".encode(), digest_size=1).digest()
    return digest[0] >= 64


def draft_stats(draft_key: str, pieces: list[str]) -> dict[str, Any]:
    """LM Studio's draft statistics for the emitted ``pieces``."""
    hits = sum(accepted(draft_key, i, p) for i, p in enumerate(pieces))
    return {
        "usedDraftModelKey": draft_key,
        "totalDraftTokensCount": len(pieces),
        "acceptedDraftTokensCount": hits,
        "rejectedDraftTokensCount": len(pieces) - hits,
        "ignoredDraftTokensCount": 0,
    }
