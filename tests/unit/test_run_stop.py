"""How `make run` stops its processes: each by its main process first."""

import os
import signal

import honcho.compat

from devtools.run import ProcessManager


def _signals(monkeypatch, procmgr):
    """The signals ``procmgr``'s stop and kill of pid 4242 send: (how, pid, signal)."""
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append(("kill", pid, signum)))
    monkeypatch.setattr(os, "killpg", lambda pid, signum: sent.append(("killpg", pid, signum)))
    procmgr.terminate(4242)
    procmgr.kill(4242)
    return sent


def test_a_stop_asks_the_main_process_alone_and_a_kill_ends_them_all(monkeypatch):
    # honcho signalled each process's whole group: a worker's pool processes, which take
    # SIGTERM's default, died with their jobs at Ctrl-C, where the worker's warm
    # shutdown would let them finish. (Real processes here were killed, now and then,
    # by other tests' stale process group ids, which this machine's pids soon reuse.)
    assert _signals(monkeypatch, ProcessManager()._procmgr) == [
        ("kill", 4242, signal.SIGTERM),
        ("killpg", 4242, signal.SIGKILL),
    ]
    assert _signals(monkeypatch, honcho.compat.ProcessManager())[0] == (
        "killpg",
        4242,
        signal.SIGTERM,
    ), "honcho's own, which this one replaces"
