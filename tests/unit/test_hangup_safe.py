"""A terminal that hangs up (closed window, dropped SSH session) before SIGHUP comes."""

import errno
import io
import os
import pty

import pytest

from devtools.database import HangupSafe


def test_lines_written_after_a_hangup_go_nowhere_and_later_ones_too() -> None:
    master, terminal = pty.openpty()
    stream = open(terminal, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        safe = HangupSafe(stream)
        print("before", file=safe, flush=True)
        assert os.read(master, 100) == b"before\r\n"
        os.close(master)
        with pytest.raises(OSError, match="Input/output error"):
            os.write(terminal, b"raw\n")

        print("after the hangup", file=safe, flush=True)
        print("and again", file=safe, flush=True)

        assert os.path.samestat(os.fstat(terminal), os.stat(os.devnull))
    finally:
        stream.close()


def test_other_errors_are_raised() -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        print("line", file=HangupSafe(Full()), flush=True)
