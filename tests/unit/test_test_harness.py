"""The test harness's own logic, without network: its iptables rules (with a fake
iptables) and its child processes (short Python scripts)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests import processes
from tests.chaos import harness
from tests.chaos.harness import IPTABLES_TAG, PacketDrops, purge_iptables_rules
from tests.processes import Process, ProcessExitedError, start_server


class FakeIptables:
    """The INPUT and OUTPUT chains, changed by ``-I``/``-D`` and listed by ``-S`` as
    iptables lists them; ``failing`` names the rules (as ``-S`` words) whose deletion fails."""

    def __init__(self, *, listing_fails: bool = False) -> None:
        self.rules: list[list[str]] = []
        self.calls: list[list[str]] = []
        self.failing: list[list[str]] = []
        self.listing_fails = listing_fails

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        action, rule = args[0], args[1:]
        if action == "-S":
            if self.listing_fails:
                raise subprocess.CalledProcessError(4, ["iptables", *args], "", "Permission denied")
            lines = [f"-P {rule[0]} ACCEPT"]
            lines += ["-A " + " ".join(r) for r in self.rules if r[0] == rule[0]]
            return subprocess.CompletedProcess(args, 0, "\n".join(lines) + "\n", "")
        if action == "-I":
            self.rules.insert(0, rule)
        elif action == "-D":
            if rule in self.failing or rule not in self.rules:
                raise subprocess.CalledProcessError(1, ["iptables", *args], "", "Bad rule")
            self.rules.remove(rule)
        return subprocess.CompletedProcess(args, 0, "", "")


def test_each_rule_is_tagged_and_iptables_waits_for_its_lock(monkeypatch):
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(harness.subprocess, "run", run)
    drops = PacketDrops()
    drops.drop("--dport", "5433")
    [command] = commands
    assert command[:3] == ["iptables", "-w", "10"]
    assert command[3:5] == ["-I", "INPUT"]
    assert command[-6:] == ["-m", "comment", "--comment", IPTABLES_TAG, "-j", "DROP"]


def test_every_rule_is_deleted_even_after_one_failed():
    iptables = FakeIptables()
    drops = PacketDrops(iptables)
    for port in ("1", "2", "3"):
        drops.drop("--dport", port)
    stuck = PacketDrops.rule("--dport", "2")
    iptables.failing.append(stuck)

    with pytest.raises(RuntimeError, match="1 iptables rule") as raised:
        drops.clear()
    assert "--dport 2" in str(raised.value)
    # The others went; the one still in the kernel is remembered, for a later try.
    assert iptables.rules == [stuck]
    assert drops.matches == [("--dport", "2")]

    iptables.failing.clear()
    drops.clear()
    assert iptables.rules == []
    assert drops.matches == []


def test_a_rule_whose_deletion_failed_is_not_forgotten():
    iptables = FakeIptables()
    drops = PacketDrops(iptables)
    drops.drop("--sport", "7")
    iptables.failing.append(PacketDrops.rule("--sport", "7"))
    with pytest.raises(subprocess.CalledProcessError):
        drops.let_through("--sport", "7")
    assert drops.matches == [("--sport", "7")]


def test_the_purge_deletes_the_tagged_rules_only():
    iptables = FakeIptables()
    PacketDrops(iptables).drop("--dport", "41000")
    PacketDrops(iptables).drop("--sport", "41000", "--dport", "5432")
    theirs = ["INPUT", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "other"]
    iptables.rules.append(theirs)
    iptables.rules.append(["OUTPUT", "-p", "tcp", "-m", "comment", "--comment", IPTABLES_TAG])

    deleted = purge_iptables_rules(iptables)
    assert len(deleted) == 3
    assert iptables.rules == [theirs]
    assert purge_iptables_rules(iptables) == []


def test_the_purge_tries_every_rule_then_raises():
    iptables = FakeIptables()
    drops = PacketDrops(iptables)
    drops.drop("--dport", "1")
    drops.drop("--dport", "2")
    iptables.failing.append(PacketDrops.rule("--dport", "2"))
    with pytest.raises(RuntimeError, match="--dport 2"):
        purge_iptables_rules(iptables)
    assert iptables.rules == [PacketDrops.rule("--dport", "2")]


def test_the_purge_does_nothing_without_iptables_or_root():
    iptables = FakeIptables(listing_fails=True)
    assert purge_iptables_rules(iptables) == []
    assert [call[0] for call in iptables.calls] == ["-S", "-S"]


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_process_exiting_fails_its_readiness_wait_at_once():
    process = Process("clashing", _python("print('OSError: Address already in use'); exit(3)"))
    try:
        started = time.monotonic()
        with pytest.raises(ProcessExitedError) as raised:
            process.wait_until_ready(lambda: False, timeout=30, waiting_for="it served")
        assert time.monotonic() - started < 10
    finally:
        process.stop()
    assert raised.value.bind_error
    assert raised.value.returncode == 3
    assert "clashing" in str(raised.value)
    assert "Address already in use" in str(raised.value)


def test_an_sqs_server_is_ready_only_once_it_says_it_bound_its_port(monkeypatch):
    # Whatever answers on the port, a server that has not printed that it serves it (its
    # bind failed: another process holds the port) is not asked.
    monkeypatch.setattr(processes.requests, "get", lambda *a, **k: pytest.fail("asked"))
    process = Process("moto", _python("print('Running on http://127.0.0.1:20009')"))
    try:
        process.popen.wait(10)
        assert not processes.sqs_server_ready(process, 20008)
    finally:
        process.stop()


def test_output_printed_as_the_process_exited_counts():
    process = Process("leaving", _python("print('Warm shutdown', flush=True)"))
    try:
        process.popen.wait(10)
        process.wait_for_output("Warm shutdown", timeout=5)
        with pytest.raises(ProcessExitedError, match="leaving"):
            process.wait_for_output("ready.", timeout=30)
    finally:
        process.stop()


def _server(taken: set[int]):
    """A fake server command: exits with a bind error on a port in ``taken``."""

    def command(port: int) -> list[str]:
        if port in taken:
            return _python("print('OSError: [Errno 98] Address already in use'); exit(1)")
        return _python(f"print('serving {port}', flush=True); import time; time.sleep(60)")

    return command


def _serving(process: Process, port: int) -> bool:
    return f"serving {port}" in process.output()


def test_a_server_that_could_not_bind_is_started_on_another_port(monkeypatch):
    monkeypatch.setattr(processes, "free_port", iter([20002, 20003]).__next__)
    process, port = start_server("fake", _server({20001, 20002}), ready=_serving, port=20001)
    try:
        assert port == 20003
        assert _serving(process, 20003)
    finally:
        process.stop()


def test_a_server_restarted_on_its_port_fails_when_it_cannot_bind(monkeypatch):
    monkeypatch.setattr(processes, "free_port", lambda: pytest.fail("moved"))
    with pytest.raises(ProcessExitedError, match="Address already in use"):
        start_server("fake", _server({20001}), ready=_serving, port=20001, move=False)


def test_stopping_twice_signals_nothing_the_second_time(monkeypatch):
    process = Process("sleeper", _python("import time; time.sleep(60)"))
    process.stop(timeout=5)
    assert process.popen.returncode is not None
    signalled = []
    monkeypatch.setattr(os, "killpg", lambda *args: signalled.append(args))
    process.stop()
    assert signalled == []


def test_a_process_reaped_elsewhere_is_not_signalled_by_group_id(monkeypatch):
    process = Process("quick", _python("pass"))
    process.popen.wait(10)  # as a test's own wait() does: its group id is free now
    signalled = []
    monkeypatch.setattr(os, "killpg", lambda *args: signalled.append(args))
    process.stop()
    process.kill()
    assert signalled == []


def test_stop_reaches_the_children_left_in_the_group():
    # The leader exits on SIGTERM; its child ignores SIGTERM, as a busy pool process may.
    code = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n"
        "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "    time.sleep(60)\n"
        "else:\n"
        "    print('forked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = Process("forking", _python(code))
    process.wait_for_output("forked", timeout=10)
    pgid = process.popen.pid
    assert len(processes._group_members(pgid)) == 2
    process.stop(timeout=5)
    assert processes.wait_until(lambda: not processes._group_members(pgid), timeout=5)
    assert process.popen.returncode == -signal.SIGTERM


def test_a_program_that_cannot_start_leaves_no_log_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(processes.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        Process("missing", [str(tmp_path / "no-such-program")])
    assert list(tmp_path.iterdir()) == []
