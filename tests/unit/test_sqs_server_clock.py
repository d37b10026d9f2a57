"""The local SQS server's clock reads what moto's own reads, the short way."""

import time
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from moto.core import utils

from devtools import sqs_server


def test_now_is_moto_now():
    before = utils.unix_time()
    now = sqs_server._unix_time()
    after = utils.unix_time()
    assert before <= now <= after + 0.001
    assert abs(sqs_server._unix_time_millis() - time.time() * 1000) < 50


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)))
def test_a_given_moment_is_converted_as_moto_converts_it(moment):
    assert sqs_server._unix_time(moment) == utils.unix_time(moment)
    assert sqs_server._unix_time_millis(moment) == utils.unix_time_millis(moment)


def test_the_command_runs_this_module_on_loopback():
    command = sqs_server.command(9324)
    assert command[1:] == ["-m", "devtools.sqs_server", "-H", "127.0.0.1", "-p", "9324"]
