"""The job contract: defaults, bounds and messages that say what to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.contract import JobRequest, StyleParams, parse_blend, parse_params


def test_blend_parsing_normalises() -> None:
    assert parse_blend("3:0.5,12:1.5") == {3: 0.25, 12: 0.75}
    assert parse_blend(7) == {7: 1.0}
    assert parse_blend({"1": 2, "2": 2}) == {1: 0.5, 2: 0.5}


@pytest.mark.parametrize("bad", ["26", "x:1", "3:-1", "3:0", {"99": 1}])
def test_bad_blends_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_blend(bad)  # type: ignore[arg-type]


def test_builtin_needs_styles_and_message_says_so() -> None:
    with pytest.raises(ValidationError) as err:
        StyleParams(method="builtin")
    assert "needs `builtin`" in str(err.value)


def test_unknown_field_and_range() -> None:
    with pytest.raises(ValidationError):
        parse_params("style", {"method": "builtin", "builtin": [1], "colour": "x"})
    with pytest.raises(ValidationError):
        parse_params("style", {"method": "builtin", "builtin": [1], "strength": 1.5})
    with pytest.raises(ValidationError):
        parse_params("faces", {"min_face_size": 0})


def test_request_kind_validated() -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"kind": "sculpt"})
    assert JobRequest.model_validate({"kind": "faces"}).parsed_params().detector == "yunet"  # type: ignore[attr-defined]
