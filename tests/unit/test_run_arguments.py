"""`make run`'s arguments are checked before anything starts."""

import pytest

from devtools import run
from devtools.run import _parser


@pytest.mark.parametrize("port", ["-1", "0", "70000", "http"])
@pytest.mark.parametrize("option", ["--port", "--sqs-port"])
def test_a_port_that_is_no_port_is_refused_at_once(option, port, capsys):
    # --port -1 migrated, created the admin user and started everything before the web
    # server failed; --sqs-port 70000 ended in a traceback.
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args([option, port])
    assert exited.value.code == 2
    assert "is not a port number (1-65535)" in capsys.readouterr().err


def test_ports_in_range_are_taken():
    args = _parser().parse_args(["--port", "8001", "--sqs-port", "65535"])
    assert (args.port, args.sqs_port) == (8001, 65535)


def test_one_port_for_the_web_server_and_sqs_is_refused_at_once(capsys, monkeypatch):
    # Both were checked free, one after the other: the run migrated, said "ready" at the
    # SQS server's address, then the web server found its port taken.
    started = []
    monkeypatch.setattr(run, "database", lambda *args, **kwargs: started.append(True))
    with pytest.raises(SystemExit) as exited:
        run.main(["--port", "24882", "--sqs-port", "24882", "--no-demo"])
    assert exited.value.code == 2
    assert "--port and --sqs-port are both 24882" in capsys.readouterr().err
    assert started == []
