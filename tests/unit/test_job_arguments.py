"""A job's arguments: the quick walk accepts exactly what survives the JSON round trip.

``validation.job_args`` and ``job_kwargs`` accept plain JSON with one walk and leave
everything else to the round trip (``json.dumps`` then ``json.loads``, compared, type by
type), which words the error. The walk must never accept what the round trip refuses,
and should accept all it keeps, or the quick path is lost.
"""

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import models
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler import validation
from scheduler.exceptions import InvalidArgumentsError
from tests.testapp.tasks import nested


class Text(str):
    __slots__ = ()


class Number(int):
    pass


class Items(list[object]):
    pass


class Fields(dict[object, object]):
    pass


# Text PostgreSQL cannot store (NUL, surrogates, a surrogate pair) comes up often.
text = st.text(st.characters() | st.sampled_from(["\x00", "\ud800", "\udfff", "é", "😀"]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**100])
    | st.floats()
    | st.sampled_from([1e16, -1e16, 9999999999999998.0, 1e300, -0.0, math.nan, math.inf])
    | text
    | st.builds(Text, text)
    | st.builds(Number, st.integers())
    | st.decimals()
    | st.datetimes(timezones=st.just(UTC))
    | st.sets(st.integers(), max_size=2)
)
# Not str subclasses: JSON writes such a key as the string it is, and the round trip
# keeps it, while the walk leaves it to the round trip (see below).
keys = text | st.integers() | st.floats() | st.booleans() | st.none() | st.tuples(st.integers())
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.builds(Items, st.lists(children, max_size=2))
        | st.dictionaries(keys, children, max_size=3)
        | st.builds(Fields, st.dictionaries(text, children, max_size=2))
    ),
    max_leaves=10,
)

# What JSON can carry, mostly accepted: the walk's own path.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)


def _survives_round_trip(value: object) -> bool:
    try:
        validation._require_json_round_trip(value, "args")
    except InvalidArgumentsError:
        return False
    return True


@settings(max_examples=1000)
@given(json_values | values)
def test_the_walk_accepts_exactly_what_survives_the_round_trip(value):
    assert (validation._plain_json_size(value) is not None) == _survives_round_trip(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({Text("key"): 1}, id="str-subclass-key"),
        pytest.param(10**700, id="int-over-640-digits"),
        pytest.param(nested(150), id="deeper-than-the-walk"),
    ],
)
def test_what_the_walk_leaves_to_the_round_trip_is_still_accepted(value):
    assert validation._plain_json_size(value) is None
    assert validation.job_args([value]) == [value]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([math.nan], "args must not contain NaN or infinite numbers, which JSON cannot store"),
        ([{"x": -math.inf}], "args must not contain NaN or infinite numbers"),
        ([Decimal("1.10")], "args must be JSON-serialisable: Object of type Decimal is not"),
        ([datetime(2026, 1, 1, tzinfo=UTC)], "args must be JSON-serialisable: Object of type"),
        # The first problem json.dumps meets wins, as it did.
        ([{1, 2}, math.nan], "args must be JSON-serialisable: Object of type set"),
        ([{(1,): 2}], "args must be JSON-serialisable: keys must be str, int, float, bool"),
        ([(1, 2)], "args do not survive a JSON round trip unchanged: args[0]: tuple comes back"),
        ([True, Number(1)], "args do not survive a JSON round trip unchanged"),
        ([{1: "one"}], "args do not survive a JSON round trip unchanged"),
        # An unchanged round trip comes first, then what PostgreSQL cannot store.
        ([(1,), "\x00"], "args do not survive a JSON round trip unchanged"),
        (["a\x00\ud800"], "args must not contain NUL characters"),
        # json.loads joins an escaped pair into one character.
        (["\ud83d\ude00"], "args do not survive a JSON round trip unchanged"),
        (["\ud83d"], "args must be valid Unicode: a lone surrogate"),
        ([{"\ud800": 1}], "args must be valid Unicode: a lone surrogate"),
        ([1e16], "args must not contain floats of magnitude 1e16 or more: PostgreSQL"),
    ],
)
def test_a_refusal_is_worded_by_the_round_trip(args, message):
    with pytest.raises(InvalidArgumentsError) as raised:
        validation.job_args(args)
    assert str(raised.value).startswith(message)
    assert raised.value.field == "args"


class Status(models.TextChoices):
    AUTHORIZED = "authorized"


SECRET = "card-token-7f3e1a9d"


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"card": SECRET, "window": (9, 17)}, "kwargs['window']: tuple comes back as list"),
        (
            {"card": SECRET, "status": Status.AUTHORIZED},
            "kwargs['status']: Status comes back as str",
        ),
        (
            {"card": SECRET, "by_id": {7: SECRET}},
            "kwargs['by_id'][key #1]: int key comes back as str",
        ),
        # A key deeper than the parameters' own is data: a token as a key is not quoted.
        ({"tokens": {"sk_live_51HqLyjW": (1,)}}, "kwargs['tokens'][key #1]: tuple comes back"),
        ({"cards": [SECRET, 1e16]}, "must not contain floats of magnitude 1e16 or more"),
        ({"card": SECRET, SECRET: [(1,)]}, "kwargs[key #2][0]: tuple comes back as list"),
    ],
)
def test_a_refusal_says_where_and_never_quotes_the_arguments(kwargs, where):
    # The whole arguments were quoted: the message reaches the worker's log line, Celery's
    # error log and error trackers (a task that retried itself with a tuple), and a web
    # request's 500 log, with a secret among them.
    with pytest.raises(InvalidArgumentsError) as raised:
        validation.job_kwargs(kwargs)
    assert where in str(raised.value)
    assert SECRET not in str(raised.value)
    assert "sk_live" not in str(raised.value)


@pytest.mark.parametrize("value", [SECRET, {SECRET: 1}])
def test_arguments_of_the_wrong_kind_are_named_by_their_type(value):
    with pytest.raises(InvalidArgumentsError) as raised:
        validation.job_args(value)
    assert SECRET not in str(raised.value)
    with pytest.raises(InvalidArgumentsError) as raised:
        validation.job_kwargs([SECRET])
    assert str(raised.value) == "kwargs must be a mapping, got list"


def test_a_cycle_is_refused_as_before():
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(InvalidArgumentsError, match="Circular reference detected"):
        validation.job_kwargs({"x": cycle})


def test_plain_arguments_come_back_as_given():
    args = [None, True, 0, -1.5, 9999999999999998.0, "é😀", [], {}, {"a": [1, {"b": None}]}]
    assert validation.job_args(tuple(args)) == args
    kwargs = {"payment_id": 7, "currency": "EUR", "tags": ["a", "b"]}
    assert validation.job_kwargs(kwargs) == kwargs


@settings(max_examples=500)
@given(json_values | values, st.booleans())
def test_arguments_are_accepted_up_to_the_most_json_a_job_may_take_and_no_further(value, as_kwargs):
    # PostgreSQL takes 256 MB of JSON at most: past it, an INSERT of a job failed, and a
    # worker took the refusal for the database out of reach. Whichever path the value
    # takes, the quick walk or the round trip, it is measured as sent.
    check, given_value = (
        (validation.job_kwargs, {"k": value}) if as_kwargs else (validation.job_args, [value])
    )
    try:
        kept = check(given_value)
    except InvalidArgumentsError:
        assume(False)
    size = len(json.dumps(kept))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "MAX_JSON_CHARACTERS", size)
        assert check(given_value) == kept
        patch.setattr(validation, "MAX_JSON_CHARACTERS", size - 1)
        with pytest.raises(InvalidArgumentsError) as refused:
            check(given_value)
    field = "kwargs" if as_kwargs else "args"
    assert str(refused.value) == (
        f"{field} are too large for PostgreSQL to store: {size:,} characters of JSON, "
        f"past the limit of {size - 1:,}"
    )


def test_a_result_past_the_most_json_a_job_may_take_is_not_storable(monkeypatch):
    monkeypatch.setattr(validation, "MAX_JSON_CHARACTERS", 10)
    assert validation.unstorable_json("x" * 8) is None  # "xxxxxxxx", quotes included
    assert validation.unstorable_json("x" * 9) == ("11 characters of JSON, past the limit of 10")
