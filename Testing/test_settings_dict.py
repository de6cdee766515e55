"""core.settings_dict: the one reader of settings dataclasses from a model file's JSON."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from SpineSegDiffLib.core.errors import ModelError
from SpineSegDiffLib.core.settings_dict import settings_from_dict


@dataclass
class Widths:
    size: int = 4
    name: str = "w"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ModelError(f"size {self.size} must be at least 1")


def test_round_trip_and_defaults():
    assert settings_from_dict(Widths, {"size": 8, "name": "x"}, "m.json", "width") == Widths(8, "x")
    assert settings_from_dict(Widths, {}, "m.json", "width") == Widths()


@pytest.mark.parametrize("data, message", [
    ([1, 2], r"m\.json: the width settings are not a JSON object"),
    ({"size": 8, "depth": 3, "aa": 1}, r"m\.json: unknown width settings \['aa', 'depth'\].*newer SpineSegDiff"),
    ({"size": 0}, r"^m\.json: size 0 must be at least 1$"),  # the dataclass's own message, with the file
])
def test_errors_name_the_file_and_the_problem(data, message):
    with pytest.raises(ModelError, match=message):
        settings_from_dict(Widths, data, "m.json", "width")


def test_a_wrong_type_is_a_model_error_not_a_traceback():
    @dataclass
    class Strict:
        size: int

    with pytest.raises(ModelError, match=r"m\.json: invalid strict settings .*damaged"):
        settings_from_dict(Strict, {}, "m.json", "strict")  # missing required field: TypeError inside
