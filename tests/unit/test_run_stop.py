"""How `make run` stops its processes: each by its main process first."""

import os
import signal
import subprocess
import sys
import time

from devtools.run import ProcessManager

#: A main process whose child, as a Celery worker's pool process does, takes SIGTERM's
#: default (dies at once); the main process waits for it, as a warm shutdown waits for
#: its jobs, and says it was told to stop.
_PARENT = """
import os, signal, sys, time
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: print("stopping", flush=True))
print(child, flush=True)
os.waitpid(child, 0)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stop_asks_the_main_process_alone_and_a_kill_ends_them_all():
    # honcho signalled each process's whole group: a worker's pool processes died with
    # their jobs at Ctrl-C, where the worker's warm shutdown would let them finish.
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        child = int(parent.stdout.readline())
        manager = ProcessManager()
        manager._procmgr.terminate(parent.pid)
        assert parent.stdout.readline().strip() == "stopping"
        time.sleep(0.2)
        assert _alive(child), "the child was signalled too"
        manager._procmgr.kill(parent.pid)
        parent.wait(timeout=10)
        for _ in range(50):
            if not _alive(child):
                break
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        parent.stdout.close()
