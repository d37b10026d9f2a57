"""A terminal that hangs up (closed window, dropped SSH session) before SIGHUP comes."""

import errno
import io
import os
import pty
import select
import subprocess
import sys

import pytest

from devtools.database import ROOT, HangupSafe


def test_lines_written_after_a_hangup_go_nowhere_and_later_ones_too() -> None:
    master, terminal = pty.openpty()
    # Line-buffered, as sys.stdout is on a terminal: each line is written at once.
    stream = open(terminal, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    try:
        safe = HangupSafe(stream)
        print("before", file=safe, flush=True)
        assert _line_from(master) == b"before\r\n"
        os.close(master)
        with pytest.raises(OSError, match="Input/output error"):
            os.write(terminal, b"raw\n")

        safe.writelines(["after the hangup\n", "and more\n"])
        print("and again", file=safe, flush=True)

        assert os.path.samestat(os.fstat(terminal), os.stat(os.devnull))
    finally:
        stream.close()


def _line_from(master: int) -> bytes:
    """What the terminal shows, up to its first line's end: the terminal may hand over a
    line's text and its end in two reads (seen on a busy machine)."""
    shown = b""
    while not shown.endswith(b"\r\n"):
        ready, _, _ = select.select([master], [], [], 10)
        assert ready, f"no line's end within 10 s: {shown!r}"
        shown += os.read(master, 100)
    return shown


def test_other_errors_are_raised() -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        print("line", file=HangupSafe(Full()), flush=True)


def test_a_process_started_without_its_output_still_stops_on_termination() -> None:
    # Started with stdout closed (`>&-`), sys.stdout is None: the runner failed at start.
    code = "from devtools.database import stop_on_termination; stop_on_termination()"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),  # the child alone, before exec
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
