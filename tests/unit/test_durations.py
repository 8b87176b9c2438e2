"""Durations as users write them in configs (hive_init/config/durations.py): pure, no processes."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive_init.config.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("10s", 10.0), ("2m", 120.0), ("1h", 3600.0), ("1h30m", 5400.0), ("1m30s500ms", 90.5),
    ("1.5s", 1.5), (" 3s ", 3.0), ("0s", 0.0), ("5", 5.0), ("0.2", 0.2), (7, 7.0), (0.5, 0.5), (0, 0.0),
])
def test_what_the_readme_allows(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "s", "10 s", "10sec", "-1s", "1d", "1s2", "ms10", "1.s", "abc"])
def test_malformed_text_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match="expected a duration like") as e:
        parse_duration(bad)
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("bad", [-1, -0.001, math.inf, math.nan, "inf", "nan", "-5"])
def test_negative_infinite_and_nan_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("bad", "reason"), [(True, "a boolean"), (None, "NoneType"), ([1], "list"), ({}, "dict")])
def test_wrong_types_say_what_they_got(bad, reason):
    with pytest.raises(ValueError, match=reason):
        parse_duration(bad)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h"])), min_size=1, max_size=4))
def test_any_sum_of_parts_is_the_sum_of_their_values(parts):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == pytest.approx(sum(n * units[unit] for n, unit in parts))
