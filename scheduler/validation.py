"""The rules a job's input must follow, shared by the services and the admin forms.

Each function returns the normalised value or raises
:class:`~scheduler.exceptions.InvalidArgumentsError` naming the offending field, so a
form can show the service's own message on its own field. Nothing here touches the
database.
"""

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from scheduler.exceptions import InvalidArgumentsError

#: kombu maps other characters of a Celery queue name to different SQS names; keeping to
#: this set makes the Celery queue name and the SQS queue name the same string.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
QUEUE_NAME_RULE = "A queue name is 1-80 letters, digits, '-' or '_'."
UNIQUE_KEY_MAX_LENGTH = 255
#: What a job's task_name and celery_task_id columns hold (Celery itself sets no limit).
TASK_NAME_MAX_LENGTH = TASK_ID_MAX_LENGTH = 255
#: The largest value of the PositiveIntegerField that stores max_attempts.
MAX_ATTEMPTS_LIMIT = 2**31 - 1
#: Room for any username: Django's are 150 characters, a custom user model's email
#: address (an EmailField) 254.
ACTOR_MAX_LENGTH = 255
#: The largest id a job can have: its primary key is a bigint.
LARGEST_JOB_ID = 2**63 - 1


def is_valid_queue_name(name: object) -> bool:
    """Whether ``name`` is usable both as a Celery queue and as an SQS queue name."""
    return isinstance(name, str) and _QUEUE_NAME.fullmatch(name) is not None


def aware_datetime(value: object, field: str = "run_at") -> datetime:
    """``value`` in UTC if it is a timezone-aware datetime.

    A non-datetime raises TypeError; a naive one raises InvalidArgumentsError (a
    ValueError), since a naive time means a different instant on every server.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{field} must be a datetime, got {value!r}")
    if timezone.is_naive(value):
        if timezone.is_naive(timezone.now()):
            # USE_TZ is off: the fault is the project's, not the call's.
            raise ImproperlyConfigured(
                f"{field} is naive: the scheduler needs USE_TZ = True (scheduler.E040)"
            )
        raise InvalidArgumentsError(
            field,
            "must be timezone-aware (e.g. django.utils.timezone.now() + delta), "
            f"got naive {value.isoformat()}",
        )
    try:
        # Stored in UTC and read back as a Python datetime: it must exist there.
        in_utc = value.astimezone(UTC)
    except OverflowError:
        raise InvalidArgumentsError(
            field, f"is out of range: {value.isoformat()} is not between years 1 and 9999 in UTC"
        ) from None
    # In UTC: two times in one time zone compare as wall-clock times (Python's rule), so
    # across a clock change a deadline before run_at was after it. And PostgreSQL reads
    # a UTC offset to the second: one with a fraction (which Python's fixed time zones
    # allow) was a DataError.
    return in_utc


def job_id_in(text: str) -> int | None:
    """The job id ``text`` spells in ASCII digits, or None (also beyond a bigint).

    Not ``str.isdigit()`` alone: "²" and "①" are digits to it, and ``int()`` refuses
    them; "٣" it reads as 3; and it refuses 5,000 digits.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(LARGEST_JOB_ID)):
        return None
    number = int(text)
    return number if number <= LARGEST_JOB_ID else None


def deadline(value: object, *, run_at: datetime) -> datetime | None:
    """None, or an aware datetime after ``run_at``: the job never starts after it."""
    if value is None:
        return None
    value = aware_datetime(value, "deadline")
    if value <= run_at:
        raise InvalidArgumentsError(
            "deadline",
            f"must be after run_at ({run_at.isoformat()}), got {value.isoformat()}",
        )
    now = timezone.now()
    if value <= now:
        # Accepted, the job would only ever expire.
        raise InvalidArgumentsError(
            "deadline", f"has passed: {value.isoformat()} is not after now ({now.isoformat()})"
        )
    return value


def run_at_in(value: object, *, now: datetime) -> datetime:
    """``now`` plus a delay given as a timedelta or a finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise TypeError(f"delay must be a timedelta or a number of seconds, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentsError("delay", f"must be finite, got {value!r}")
    try:
        run_at = now + (value if isinstance(value, timedelta) else timedelta(seconds=value))
    except OverflowError:
        raise InvalidArgumentsError(
            "delay", f"is out of range: {value!r} from now is not between years 1 and 9999"
        ) from None
    return aware_datetime(run_at, "delay")


def job_args(value: object) -> list[Any]:
    """Positional arguments: a list or tuple that survives a JSON round trip."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidArgumentsError("args", f"must be a list or tuple, got {type(value).__name__}")
    args = list(value)
    _require_json(args, "args")
    return args


def job_kwargs(value: object) -> dict[str, Any]:
    """Keyword arguments: a mapping with string keys that survives a JSON round trip."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentsError("kwargs", f"must be a mapping, got {type(value).__name__}")
    kwargs = dict(value)
    if not all(isinstance(key, str) for key in kwargs):
        raise InvalidArgumentsError("kwargs", "keys must be strings")
    _require_json(kwargs, "kwargs")
    return kwargs


def queue_name(value: object) -> str | None:
    """A queue name, or None (empty included) for the default queue."""
    if value is None or value == "":
        return None
    if not is_valid_queue_name(value):
        raise InvalidArgumentsError("queue", f"{value!r} is not valid. {QUEUE_NAME_RULE}")
    return str(value)


def max_attempts(value: object) -> int | None:
    """A positive number of attempts, or None for the default."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_ATTEMPTS_LIMIT
    ):
        raise InvalidArgumentsError(
            "max_attempts", f"must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}, got {value!r}"
        )
    return value


def unique_key(value: object) -> str | None:
    """A non-blank key of at most 255 characters, or None."""
    return _optional_name(value, "unique_key", UNIQUE_KEY_MAX_LENGTH)


def task_name(value: str) -> str:
    """A registered task's name, if a job can hold it."""
    return _name(value, "task", TASK_NAME_MAX_LENGTH)


def task_id(value: str) -> str:
    """A Celery call's task id, if a job can hold it (Celery takes any text)."""
    if len(value) > TASK_ID_MAX_LENGTH:
        raise InvalidArgumentsError(
            "task_id", f"must be at most {TASK_ID_MAX_LENGTH} characters, got {len(value):,}"
        )
    _require_storable_text(value, "task_id")
    return value


def actor(value: object) -> str | None:
    """Who acts (a username, for the audit trail), or None for code that records nothing."""
    return _optional_name(value, "actor", ACTOR_MAX_LENGTH)


def _optional_name(value: object, field: str, max_length: int) -> str | None:
    """None, or a string that is not blank and at most ``max_length`` long."""
    return None if value is None else _name(value, field, max_length)


def _name(value: object, field: str, max_length: int) -> str:
    """A string that is not blank, at most ``max_length`` long, that PostgreSQL stores."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidArgumentsError(
            field,
            f"must be a non-empty string of at most {max_length} characters, got {value!r}",
        )
    _require_storable_text(value, field)
    return value


def reason(value: object) -> str:
    """Why an operator acts, as typed (stripped); may be empty."""
    if not isinstance(value, str):
        raise InvalidArgumentsError("reason", f"must be a string, got {value!r}")
    _require_storable_text(value, "reason")
    return value.strip()


def _require_json(value: object, field: str) -> None:
    """The stored arguments must come back equal (no tuples, dates, Decimals, NaN) and fit
    in :data:`MAX_JSON_CHARACTERS`."""
    # One walk accepts the usual arguments at a fraction of the cost of the round trip,
    # which decides the rest and words the error.
    size = _plain_json_size(value)
    if size is None or size > MAX_JSON_CHARACTERS:
        try:
            _require_json_round_trip(value, field)
        except RecursionError:
            # Deeper than Python's stack lets the round trip go: a few hundred levels.
            raise InvalidArgumentsError(
                field,
                f"are nested too deeply to check (up to {_PLAIN_JSON_DEPTH} levels always are)",
            ) from None


def _plain_json_size(value: object, depth: int = 0) -> int | None:
    """No fewer characters than ``json.dumps(value)`` writes, if ``value`` is made of
    JSON's own types only, exactly (no subclass), within the bounds the round trip and
    PostgreSQL keep: then it comes back unchanged. None otherwise."""
    if type(value) is str:
        if _UNSTORABLE_TEXT.search(value) is not None:
            return None
        # Quoted; an escape is 6 characters (\u00e9), a character past U+FFFF two of them.
        return 2 + len(value) * (6 if value.isascii() else 12)
    if type(value) is int:
        if not -_INT_ALWAYS_CONVERTS < value < _INT_ALWAYS_CONVERTS:
            return None
        # A digit holds more than three bits; and a sign.
        return value.bit_length() // 3 + 2
    if type(value) is float:
        # None for NaN and the infinities too.
        return _FLOAT_CHARACTERS if -_FLOAT_READ_AS_INT < value < _FLOAT_READ_AS_INT else None
    if value is None or type(value) is bool:
        return len("false")
    if depth == _PLAIN_JSON_DEPTH:
        return None
    size = 2  # the brackets or braces
    if type(value) is list:
        for item in value:
            if (item_size := _plain_json_size(item, depth + 1)) is None:
                return None
            size += item_size + len(", ")
        return size
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str or (key_size := _plain_json_size(key)) is None:
                return None
            if (item_size := _plain_json_size(item, depth + 1)) is None:
                return None
            size += key_size + len(": ") + item_size + len(", ")
        return size
    return None


#: Deeper values (a cycle, say) are left to the round trip, which reports a cycle.
_PLAIN_JSON_DEPTH = 100
#: Ints of up to 640 digits always convert to text and back: sys.set_int_max_str_digits()
#: takes no lower limit. Longer ones are left to the round trip, under the current limit.
_INT_ALWAYS_CONVERTS = 10**640
#: The longest a float of the walk's is written: -2.2250738585072014e-308.
_FLOAT_CHARACTERS = 24

#: The most characters of JSON one of a job's values (its args, kwargs or result) may
#: take, as sent to PostgreSQL (non-ASCII characters as escapes): jsonb holds no string of
#: more bytes, and larger JSON failed its INSERT, its UPDATE or, some hundreds of megabytes
#: on, the connection.
MAX_JSON_CHARACTERS = 2**28 - 1


def _json_size_refusal(size: int) -> str | None:
    """Why ``size`` characters of JSON are too many for one value, or None."""
    if size <= MAX_JSON_CHARACTERS:
        return None
    return f"{size:,} characters of JSON, past the limit of {MAX_JSON_CHARACTERS:,}"


def _require_json_round_trip(value: object, field: str) -> None:
    """``value`` must come back from JSON equal, of the same types, and storable."""
    try:
        text = json.dumps(value, allow_nan=False)
    except ValueError as error:
        if "Out of range float" in str(error):
            raise InvalidArgumentsError(
                field, "must not contain NaN or infinite numbers, which JSON cannot store"
            ) from None
        raise InvalidArgumentsError(field, f"must be JSON-serialisable: {error}") from None
    except TypeError as error:
        raise InvalidArgumentsError(field, f"must be JSON-serialisable: {error}") from None
    if (too_large := _json_size_refusal(len(text))) is not None:
        raise InvalidArgumentsError(field, f"are too large for PostgreSQL to store: {too_large}")
    round_tripped = json.loads(text)
    changed = _change(value, round_tripped, field, named_keys=field == "kwargs")
    if changed is None and round_tripped != value:
        changed = f"{field} comes back different"
    if changed is not None:
        # Where and of which types, never the values: the message is logged, and
        # reaches error trackers (a secret among the arguments would too).
        raise InvalidArgumentsError(
            field,
            f"do not survive a JSON round trip unchanged: {changed} (use lists, not "
            "tuples, plain str, int and float, not their subclasses, and string keys)",
        )
    for leaf in _leaves(round_tripped):
        if isinstance(leaf, str):
            _require_storable_text(leaf, field)
        elif isinstance(leaf, float) and abs(leaf) >= _FLOAT_READ_AS_INT:
            raise InvalidArgumentsError(
                field,
                "must not contain floats of magnitude 1e16 or more: PostgreSQL "
                "gives them back as integers; pass an int or a string",
            )


#: Python writes floats from 1e16 up in exponent form, which PostgreSQL's jsonb keeps as a
#: number without a decimal point: they would come back as ints.
_FLOAT_READ_AS_INT = 1e16


def _leaves(value: object) -> Iterator[object]:
    """Every scalar in a JSON value, object keys included."""
    if isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    else:
        yield value


#: What PostgreSQL cannot store in text: NUL, and UTF-16 surrogates (which UTF-8 cannot
#: encode; a Python str holds them only as lone code points, paired or not).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def holds_unstorable_text(value: object) -> bool:
    """Whether a string in ``value`` (a JSON value, its keys included) holds what
    PostgreSQL cannot store: JSON encodes it, the database then refuses it."""
    return any(isinstance(leaf, str) and _UNSTORABLE_TEXT.search(leaf) for leaf in _leaves(value))


def unstorable_json(value: object) -> str | None:
    """Why a jsonb column cannot hold ``value`` (not JSON, NaN or an infinity, past
    :data:`MAX_JSON_CHARACTERS`, text PostgreSQL cannot store, nested deeper than
    Python's stack allows), or None if it can."""
    try:
        text = json.dumps(value, allow_nan=False)
        if (too_large := _json_size_refusal(len(text))) is not None:
            return too_large
        if holds_unstorable_text(value):
            return "text PostgreSQL cannot store (NUL or a lone surrogate)"
    except (TypeError, ValueError) as error:
        return str(error)
    except RecursionError:
        return "nested too deeply for Python's stack"
    return None


def storable_text(text: str) -> str:
    """``text`` with what PostgreSQL cannot store in it replaced by U+FFFD."""
    return _UNSTORABLE_TEXT.sub("\ufffd", text)


def _require_storable_text(text: str, field: str) -> None:
    """PostgreSQL stores neither NUL characters nor lone UTF-16 surrogates."""
    if _UNSTORABLE_TEXT.search(text) is None:
        return
    if "\x00" in text:
        raise InvalidArgumentsError(
            field, "must not contain NUL characters (\\x00), which PostgreSQL cannot store"
        )
    raise InvalidArgumentsError(
        field, "must be valid Unicode: a lone surrogate (\\ud800-\\udfff) cannot be stored"
    )


def _change(value: object, back: object, path: str, *, named_keys: bool = False) -> str | None:
    """Where ``back``, ``value`` through JSON, first differs from it in type, as the
    path to that place and the two types (never a value); None if nowhere.

    Keys are named only when ``named_keys`` (the keyword arguments' own: parameter
    names, which are code); deeper, a key is data, and is given by its position.
    """
    # 1 == 1.0 and True == 1 in Python, but a task would receive a different type.
    if type(value) is not type(back):
        return f"{path}: {type(value).__name__} comes back as {type(back).__name__}"
    if isinstance(value, list) and isinstance(back, list):
        for index, (item, item_back) in enumerate(zip(value, back, strict=True)):
            if (changed := _change(item, item_back, f"{path}[{index}]")) is not None:
                return changed
    elif isinstance(value, dict) and isinstance(back, dict):
        for position, (key, item) in enumerate(value.items()):
            named = named_keys and isinstance(key, str) and key.isidentifier()
            where = f"{path}[{key!r}]" if named else f"{path}[key #{position + 1}]"
            if not isinstance(key, str):
                return f"{where}: {type(key).__name__} key comes back as str"
            if (changed := _change(item, back.get(key), where)) is not None:
                return changed
    return None
