"""The formatted tracebacks attempts keep: bounded, and read for the line that names
the exception."""

import itertools
import re

#: How Python prints an exception group's traceback: its first line, and each own line's
#: margin.
_GROUP_START, _GROUP_MARGIN = "  + Exception Group Traceback", "  | "


#: Room for the note that says how much of a bounded traceback was left out.
_LEFT_OUT_ROOM = 64
_LEFT_OUT = re.compile(r"\[[\d,]+ characters left out\]")
#: The line between two exceptions of a chain (``raise … from``, or raised in handling),
#: unindented: the one of an exception group's sub-exception has its margin.
_CHAINED = re.compile(
    r"^(?:The above exception was the direct cause of the following exception:"
    r"|During handling of the above exception, another exception occurred:)$",
    re.MULTILINE,
)


def bounded(traceback: str, *, length: int) -> str:
    """``traceback`` within ``length`` characters: its start (the call stack) and its end
    (the exception, from its line on when its message is long), with a note of how much
    was left out in each place."""
    if len(traceback) <= length:
        return traceback
    kept = length - _LEFT_OUT_ROOM
    start = kept // 2
    end = _end_at(traceback, length=kept - start)
    if end < start:  # the start holds the exception's line
        end = len(traceback) - (kept - start)
    tail = bounded(traceback[end:], length=kept - start)
    return f"{traceback[:start]}\n[{end - start:,} characters left out]\n{tail}"


def ending(traceback: str, *, length: int) -> str:
    """The end of ``traceback`` within ``length`` characters, for a list to name its
    exception from: its last characters, or, when they miss that line (a long message),
    from the last exception's last frame (or an exception group's start) on, bounded."""
    return bounded(traceback[_end_at(traceback, length=length) :], length=length)


def _end_at(traceback: str, *, length: int) -> int:
    """Where :func:`ending` starts: ``length`` characters from the end, or earlier, where
    the last exception's line is among the characters that follow."""
    tail = max(len(traceback) - length, 0)
    if not tail or exception_line(traceback[tail:]) == exception_line(traceback):
        return tail
    last = _last_exception_at(traceback)
    frame = traceback.rfind("\n  File ", last)
    if frame >= 0:
        return frame + 1
    section = len(traceback) - len(traceback[last:].lstrip("\n"))
    # A group's frames carry its margin: from its start, whose own lines name it. A
    # text without frames (a lease that expired) keeps its end.
    return section if traceback.startswith(_GROUP_START, section) else tail


def _last_exception_at(traceback: str) -> int:
    """Where the traceback of a chain's last exception starts (0 without a chain)."""
    chain = list(_CHAINED.finditer(traceback))
    return chain[-1].end() if chain else 0


def exception_line(traceback: str) -> str:
    """The line of a formatted traceback that names its exception (the last of a chain):
    the first unindented one after the last frame, since a message may span lines
    (PostgreSQL's DETAIL) and notes follow it; the last line of a text without frames."""
    lines = traceback[_last_exception_at(traceback) :].lstrip("\n").rstrip().splitlines()
    if lines and lines[0].startswith(_GROUP_START):
        # An exception group's own lines carry a margin, up to its first sub-exception.
        lines = [
            line.removeprefix(_GROUP_MARGIN)
            for line in itertools.takewhile(lambda line: not line.startswith("  +-"), lines[1:])
        ]
    frames = [number for number, line in enumerate(lines) if line.startswith("  File ")]
    if not frames:
        return lines[-1] if lines else ""
    # Not the note of a bounded traceback whose middle held the exception's line.
    return next(
        (
            line
            for line in lines[frames[-1] + 1 :]
            if not line.startswith(" ") and not _LEFT_OUT.fullmatch(line)
        ),
        "",
    )


def exception_summary(traceback: str, *, length: int) -> str:
    """The line of ``traceback`` that names its exception, cut after ``length``
    characters: for a list, a summary or a log line."""
    line = exception_line(traceback)
    return line if len(line) <= length else f"{line[:length]}…"
