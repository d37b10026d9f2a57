"""How much of an error's text an attempt keeps, and the line lists and logs show."""

import re

from hypothesis import given
from hypothesis import strategies as st

from scheduler.services.running import ERROR_LENGTH, _bounded, final_line


@given(
    start=st.text(min_size=1, max_size=50),
    middle=st.integers(min_value=0, max_value=3 * ERROR_LENGTH),
    end=st.text(min_size=1, max_size=50),
)
def test_an_error_keeps_its_start_and_end_within_the_limit(start, middle, end):
    error = start + "x" * middle + end
    kept = _bounded(error)
    assert len(kept) <= ERROR_LENGTH
    assert kept.startswith(start)
    assert kept.endswith(end)
    if len(error) <= ERROR_LENGTH:
        assert kept == error
        return
    # The note counts exactly what is not there.
    parts = re.fullmatch(r"(.*)\n\[([\d,]+) characters left out\]\n(.*)", kept, re.DOTALL)
    assert parts is not None
    head, left_out, tail = parts[1], int(parts[2].replace(",", "")), parts[3]
    assert error.startswith(head)
    assert error.endswith(tail)
    assert len(head) + left_out + len(tail) == len(error)


def test_the_final_line_is_the_exceptions_cut_to_the_length():
    error = "Traceback (most recent call last):\n  File 'x'\nValueError: " + "y" * 100 + "\n"
    assert final_line(error, length=20) == "ValueError: yyyyyyyy…"
    assert final_line("Traceback\nKeyError: 'a'", length=20) == "KeyError: 'a'"
    assert final_line("", length=20) == ""
