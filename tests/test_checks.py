"""The shared argument checks: the type rule, the message shape and the returned value."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from relaxclip._checks import check_bool, check_choice, check_int, check_real, check_type, describe


@given(st.one_of(st.integers(), st.text(), st.none(), st.floats(allow_nan=False)))
def test_check_type_returns_instances_and_names_the_rest(value: object) -> None:
    if isinstance(value, str):
        assert check_type("x", value, str, "a str") is value
    else:
        with pytest.raises(TypeError, match=r"^x must be a str, got .+; hint$") as info:
            check_type("x", value, str, "a str", "; hint")
        assert describe(value) in str(info.value)


def test_check_type_takes_a_tuple_of_types() -> None:
    assert check_type("x", None, (str, type(None)), "a str or None") is None
    with pytest.raises(TypeError, match="x must be a str or None, got int 3"):
        check_type("x", 3, (str, type(None)), "a str or None")


def test_describe_shows_tensors_by_shape_dtype_and_device() -> None:
    text = describe(torch.zeros(2, 3))
    assert text == "Tensor of shape (2, 3), torch.float32 on cpu"
    assert describe("x" * 200).endswith("...") and len(describe("x" * 200)) <= 84


def test_wrong_types_raise_type_error_and_bad_values_value_error() -> None:
    with pytest.raises(TypeError, match="n must be an int, got bool True"):
        check_int("n", True)
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        check_int("n", 0, minimum=1)
    with pytest.raises(TypeError, match="flag must be True or False, got int 1"):
        check_bool("flag", 1)
    with pytest.raises(ValueError, match=r"q must be a number in \(0.0, 1.0\], got 0.0"):
        check_real("q", 0.0, low=0.0, high=1.0, low_open=True)


@given(
    st.one_of(st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.text(), max_size=3))
)
def test_check_type_exclude_refuses_a_subtype(value: object) -> None:
    """``exclude`` takes precedence: a bool is an int but not a number here, a str a sequence."""
    number_ok = isinstance(value, int) and not isinstance(value, bool)
    if number_ok:
        assert check_type("n", value, numbers.Real, "a number", exclude=bool) is value
    else:
        with pytest.raises(TypeError, match=r"^n must be a number, got "):
            check_type("n", value, numbers.Real, "a number", exclude=bool)
    if isinstance(value, list):
        assert check_type("s", value, Sequence, "a sequence", exclude=str) is value
    else:
        with pytest.raises(TypeError, match=r"^s must be a sequence, got "):
            check_type("s", value, Sequence, "a sequence", exclude=str)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.lists(st.text())))
def test_check_choice_type_error_for_a_non_str_among_str_choices(value: object) -> None:
    choices = ("omit", "raise")
    if value in choices and isinstance(value, str):
        assert check_choice("policy", value, choices) == value
        return
    error = ValueError if isinstance(value, str) else TypeError
    with pytest.raises(error, match=r"^policy must be one of 'omit', 'raise', got "):
        check_choice("policy", value, choices)


def test_check_choice_value_error_among_non_str_choices() -> None:
    with pytest.raises(ValueError, match="k must be one of 1, 2, got int 3"):
        check_choice("k", 3, (1, 2))
    with pytest.raises(ValueError, match="k must be one of 1, 2, got bool True"):
        check_choice("k", True, (1, 2))
