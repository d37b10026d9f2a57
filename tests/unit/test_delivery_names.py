"""The name a delivery's attempt carries, by which a claim tried again knows its own."""

import os

from celery.app.task import Context
from celery.signals import worker_process_init

from scheduler.worker import connections as worker_connections
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


def test_a_pool_process_names_its_deliveries_by_its_workers_node_name(monkeypatch):
    # Celery's slow trace path (a prefork WorkController built in code, not `celery
    # worker`) gives the request the bare host name, where the worker's main process,
    # which ends the attempt of a lost pool process, knows it by its node name: the
    # lost job's attempt went unfound and it waited out its lease.
    monkeypatch.setattr(os, "getpid", lambda: 7)
    monkeypatch.setattr(task, "_pool_node_name", None)
    try:
        worker_process_init.send(sender="celery@shared-host")
    finally:
        worker_connections.keep_sessions_alive(False)  # the signal's other receiver
    name = task._delivering(Context(hostname="shared-host"))
    assert name.startswith(task.delivery_process("celery@shared-host", 7) + ":")
