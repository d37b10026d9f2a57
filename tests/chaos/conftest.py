"""Fixtures of the chaos suite: an SQS server of each test's own and a cluster to break.

The suite runs at a small size by default (CI); ``CHAOS_SCALE=large`` runs the sizes of
issue 8 (5,000 jobs for the dispatcher race, 1,000 for the backlog).
"""

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from scheduler.dispatch.queues import ensure_queue
from tests import settings as base_settings
from tests import settings_chaos
from tests.chaos.harness import Cluster, SqsServer, child_env, purge_iptables_rules

#: The scheduler settings the chaos processes use, for this process to agree with them.
CHAOS_SETTINGS = {
    name: getattr(settings_chaos, name)
    for name in dir(settings_chaos)
    if name.startswith("SCHEDULER_")
    and getattr(settings_chaos, name) != getattr(base_settings, name, None)
}
LARGE = os.environ.get("CHAOS_SCALE", "small") == "large"


def scale(small: int, large: int) -> int:
    """A size for CI, or for ``CHAOS_SCALE=large``."""
    return large if LARGE else small


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # The cluster fixture prints its processes' logs when the test itself failed.
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session", autouse=True)
def no_leftover_iptables_rules() -> Iterator[None]:
    """No packet-dropping rule of an earlier run (killed before its clean-up: SIGKILL, a
    CI timeout) is left in the kernel when the suite starts, nor of this one after it."""
    purge_iptables_rules()
    yield
    purge_iptables_rules()


@pytest.fixture
def sqs_server() -> Iterator[SqsServer]:
    """A moto server for this test alone: pausing it disturbs no other test."""
    server = SqsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(
    transactional_db: None,
    sqs_server: SqsServer,
    settings: Any,
    tmp_path: Any,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """No process yet: the test starts the workers and dispatchers it needs."""
    for name, value in CHAOS_SETTINGS.items():
        setattr(settings, name, value)
    settings.SCHEDULER_SQS_ENDPOINT_URL = sqs_server.endpoint
    settings.SCHEDULER_QUEUE_NAME = f"chaos-{uuid.uuid4().hex[:10]}"
    ensure_queue()
    env = child_env(
        database=connection.settings_dict,
        endpoint=sqs_server.endpoint,
        queue=settings.SCHEDULER_QUEUE_NAME,
    )
    running = Cluster(env=env, workdir=tmp_path)
    try:
        yield running
    finally:
        if request.node.stash.get(_FAILED, True):
            running.dump_output()
        running.close()
