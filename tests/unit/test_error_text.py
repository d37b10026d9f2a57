"""How much of an error's text an attempt keeps, and the line lists and logs show."""

import re
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.services.running import ERROR_LENGTH
from scheduler.tracebacks import bounded, ending, exception_line, exception_summary


@given(
    start=st.text(min_size=1, max_size=50),
    middle=st.integers(min_value=0, max_value=3 * ERROR_LENGTH),
    end=st.text(min_size=1, max_size=50),
)
def test_an_error_keeps_its_start_and_end_within_the_limit(start, middle, end):
    error = start + "x" * middle + end
    kept = bounded(error, length=ERROR_LENGTH)
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


def test_the_summary_is_the_line_naming_the_exception_cut_to_the_length():
    error = (
        "Traceback (most recent call last):\n"
        '  File "capture.py", line 3, in capture\n'
        "    raise ValueError(reply)\n"
        "ValueError: " + "y" * 100 + "\n"
        "more of its message\n"
    )
    assert exception_summary(error, length=20) == "ValueError: yyyyyyyy…"
    assert exception_summary("Traceback\nKeyError: 'a'", length=20) == "KeyError: 'a'"
    assert exception_summary("", length=20) == ""
    # Of an error kept by its start and end, the exception's line is at its start.
    kept = bounded(error.replace("y" * 100, "y" * 3 * ERROR_LENGTH), length=ERROR_LENGTH)
    assert exception_summary(kept, length=20) == "ValueError: yyyyyyyy…"


@pytest.mark.parametrize(
    "message",
    ["z" * 50_000, "a reply of many lines\n" + "line\n" * 10_000],
    ids=["long", "many lines"],
)
def test_a_traceback_long_in_its_stack_and_its_message_keeps_the_exceptions_line(message):
    # Cut in its middle, it lost that line: Django's tasks read the exception's class
    # from it.
    frames = "".join(f'  File "app.py", line {n}, in step\n    step()\n' for n in range(2000))
    error = "Traceback (most recent call last):\n" + frames + "LookupError: " + message
    kept = bounded(error, length=ERROR_LENGTH)
    assert len(kept) <= ERROR_LENGTH
    assert kept.startswith(error[:1000])
    assert kept.endswith(error[-1000:])
    assert exception_summary(kept, length=20) == "LookupError: " + message[:7] + "…"
    # Each note counts exactly what it stands for.
    left_out = sum(int(n.replace(",", "")) for n in re.findall(r"\[([\d,]+) characters left", kept))
    assert len(re.sub(r"\n\[[\d,]+ characters left out\]\n", "", kept)) + left_out == len(error)


def test_a_jobs_last_error_is_its_end_from_which_lists_name_the_exception():
    stack = "Traceback (most recent call last):\n" + '  File "pay.py", line 9, in pay\n    go()\n'
    short = stack + "KeyError: 'card'\n"
    assert ending(short, length=2000) == short
    # A long message: its last characters alone are the message's end.
    long = stack + "GatewayError: <html>" + "p" * 5000 + "</html>\n"
    kept = ending(long, length=2000)
    assert len(kept) <= 2000
    assert kept.startswith('  File "pay.py"')
    assert kept.endswith("</html>\n")
    assert exception_line(kept).startswith("GatewayError: <html>ppp")
    # Many frames: their last characters hold the last frame and the exception.
    deep = "Traceback\n" + '  File "a.py", line 1, in f\n    f()\n' * 500 + "RecursionError: deep\n"
    assert ending(deep, length=2000) == deep[-2000:]
    # Text without frames (a lease that expired) keeps its end.
    assert ending("lease expired " + "w" * 3000, length=2000) == "w" * 2000


def _formatted(raise_it) -> str:
    try:
        raise_it()
    except BaseException as error:
        return "".join(traceback.format_exception(error))
    raise AssertionError("nothing raised")


def _group_then_lookup_error():
    try:
        raise ExceptionGroup("fetches", [ConnectionError("mirror 1"), ConnectionError("2")])
    except* ConnectionError:
        raise LookupError("no mirror answered") from None


def _group_then_chained_lookup_error():
    try:
        raise ExceptionGroup("fetches", [ConnectionError("mirror 1")])
    except ExceptionGroup as group:
        raise LookupError("no mirror answered") from group


def _key_error_then_group():
    try:
        {}["missing"]
    except KeyError:
        raise ExceptionGroup("several", [ValueError("a")]) from None


def _key_error_then_implicit_group():
    try:
        {}["missing"]
    except KeyError:
        raise ExceptionGroup("several", [ValueError("a")])  # noqa: B904 - the chain is the point


def _zero_then_value_error():
    try:
        1 / 0  # noqa: B018 - raises
    except ZeroDivisionError as error:
        raise ValueError("bad input") from error


def test_the_exception_line_is_the_last_exceptions_of_a_chain():
    # The last exception raised is the one that ended the attempt, as Celery and
    # django.tasks name it, whatever came before it in the chain.
    assert exception_line(_formatted(_group_then_lookup_error)) == (
        "LookupError: no mirror answered"
    )
    assert exception_line(_formatted(_group_then_chained_lookup_error)) == (
        "LookupError: no mirror answered"
    )
    assert exception_line(_formatted(_key_error_then_group)).startswith("ExceptionGroup: several")
    assert exception_line(_formatted(_key_error_then_implicit_group)).startswith(
        "ExceptionGroup: several"
    )
    assert exception_line(_formatted(_zero_then_value_error)) == "ValueError: bad input"


def _task_group_with_a_long_reply():
    raise ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [ConnectionError("gateway replied: <html>" + "p" * 5000 + "</html>")],
    )


def _chained_long_reply():
    try:
        {}["card"]
    except KeyError as error:
        raise ValueError("gateway replied: <html>" + "p" * 5000 + "</html>") from error


def test_a_jobs_last_error_names_the_exception_of_a_group_or_a_chain():
    for raise_it in (_task_group_with_a_long_reply, _chained_long_reply):
        error = _formatted(raise_it)
        kept = ending(error, length=2000)
        assert len(kept) <= 2000
        # The start of the line naming it (a long one's middle is left out).
        assert exception_line(kept)[:60] == exception_line(error)[:60]
        assert kept.endswith(error[-500:])
