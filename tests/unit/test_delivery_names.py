"""The name a delivery's attempt carries, by which a claim tried again knows its own."""

import os

from celery.app.task import Context

from scheduler.worker import task


def test_two_processes_with_one_host_and_pid_name_their_deliveries_apart(monkeypatch):
    # Pool processes of two workers in two containers on one host's network share the
    # host name and may share a pid: a claim tried again after a lost answer in one took
    # the other's running attempt of the same job (a re-sent copy) for its own.
    monkeypatch.setattr(os, "getpid", lambda: 7)
    request = Context(hostname="celery@shared-host")
    first = task._delivering(request)
    assert first == task._delivering(request)  # one process: one name
    task._process_mark.cache_clear()  # the other container's process
    second = task._delivering(request)
    assert first != second
    assert first.startswith("celery@shared-host:7:")
