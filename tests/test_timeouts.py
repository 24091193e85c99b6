"""``Timeouts``: the value object of every ``timeout=``."""

from __future__ import annotations

import pytest

import lmstudio_async as lms


def test_with_replaces_some_deadlines_and_checks_them() -> None:
    base = lms.Timeouts(idle=30, connect=5)
    assert base.with_(idle=None, total=2) == lms.Timeouts(idle=None, total=2, connect=5)
    assert base.with_() == base
    with pytest.raises(lms.LMStudioValueError, match=r"^Timeouts\.idle must be a positive"):
        base.with_(idle=0)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("idel", " (did you mean 'idle'?)"),
        ("keepaliveTimeout", " (did you mean 'keepalive_timeout'?)"),
        ("deadline", ""),
    ],
)
def test_with_an_unknown_field_is_a_value_error_naming_it(name: str, hint: str) -> None:
    with pytest.raises(lms.LMStudioValueError) as info:
        lms.Timeouts().with_(**{name: 5})
    assert str(info.value) == (
        f"Timeouts has no field {name!r}{hint}; "
        "the fields are idle, total, connect, keepalive_interval, keepalive_timeout"
    )
