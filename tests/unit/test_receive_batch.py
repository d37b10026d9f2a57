"""A worker asks SQS for full batches of ten even while it holds messages until their eta.

kombu's SQS transport asks for as many messages per ReceiveMessage call as the QoS
allows (``prefetch count - unacknowledged``, at most ten). Every job message carries an
eta, and Celery raises the prefetch count by one per message it holds for its eta, so
what is left for each receive is the prefetch count the worker started with:
``CELERY_WORKER_PREFETCH_MULTIPLIER`` x the pool size. With two, a burst of jobs
released a few seconds before their time reaches a worker two per round trip.
"""

import re
from types import SimpleNamespace

from kombu.transport.SQS import SQS_MAX_MESSAGES, Channel
from kombu.transport.virtual.base import QoS

from project.celery import app
from tests.processes import ROOT


def _procfile_concurrency():
    [concurrency] = re.findall(r"--concurrency=(\d+)", (ROOT / "Procfile").read_text())
    return int(concurrency)


def _receive_batch(*, held_for_eta):
    """What one receive asks for while the worker holds ``held_for_eta`` messages."""
    start = app.conf.worker_prefetch_multiplier * _procfile_concurrency()
    qos = QoS(channel=SimpleNamespace(do_restore=False), prefetch_count=start + held_for_eta)
    for tag in range(held_for_eta):
        qos.append(message=None, delivery_tag=tag)
    return Channel._get_message_estimate(SimpleNamespace(qos=qos))


def test_a_worker_receives_full_batches_while_holding_messages_for_their_eta():
    assert _receive_batch(held_for_eta=0) == SQS_MAX_MESSAGES
    assert _receive_batch(held_for_eta=300) == SQS_MAX_MESSAGES
