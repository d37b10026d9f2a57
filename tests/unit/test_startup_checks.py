"""check_before_start: the system checks Celery's worker and beat run as they start."""

from collections.abc import Callable
from typing import Any

import pytest
from django.core import checks as django_checks
from django.core.checks import CheckMessage

from scheduler import checks
from scheduler.conf import SQS_MAX_DELAY_SECONDS


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as one that has not checked yet, without CELERY_SKIP_CHECKS."""
    monkeypatch.setattr(checks, "_checked_before_start", set())
    monkeypatch.delenv("CELERY_SKIP_CHECKS", raising=False)


def reporting(monkeypatch: pytest.MonkeyPatch, *messages: CheckMessage) -> Callable[[], list[bool]]:
    """Make the checks report ``messages``; what returns one entry per run of them."""
    runs: list[bool] = []

    def run_checks(*_: Any, **__: Any) -> list[CheckMessage]:
        runs.append(True)
        return list(messages)

    monkeypatch.setattr(django_checks, "run_checks", run_checks)
    return lambda: runs


@pytest.mark.usefixtures("fresh_process")
def test_an_error_of_the_real_checks_stops_the_process_and_is_printed(
    settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.SCHEDULER_LOOKAHEAD_SECONDS = SQS_MAX_DELAY_SECONDS + 1
    with pytest.raises(SystemExit) as exited:
        checks.check_before_start()
    assert exited.value.code == 1
    report = capsys.readouterr().err
    assert "SystemCheckError: System check identified some issues:" in report
    assert "?: (scheduler.E003) SCHEDULER_LOOKAHEAD_SECONDS" in report
    assert "Traceback" not in report


@pytest.mark.usefixtures("fresh_process")
def test_warnings_are_printed_and_the_process_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reporting(monkeypatch, django_checks.Warning("a doubtful setting", id="tests.W001"))
    checks.check_before_start()
    report = capsys.readouterr().err
    assert "WARNINGS:" in report
    assert "?: (tests.W001) a doubtful setting" in report


@pytest.mark.usefixtures("fresh_process")
def test_a_silenced_error_does_not_stop_the_process(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # As manage.py commands honour SILENCED_SYSTEM_CHECKS, so do the worker and beat.
    settings.SILENCED_SYSTEM_CHECKS = ["tests.E001"]
    reporting(monkeypatch, django_checks.Error("a bad setting", id="tests.E001"))
    checks.check_before_start()


@pytest.mark.usefixtures("fresh_process")
def test_the_checks_run_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker's embedded beat (worker -B), and beat's second hook, find them done.
    runs = reporting(monkeypatch)
    checks.check_before_start()
    checks.check_before_start()
    assert len(runs()) == 1


@pytest.mark.usefixtures("fresh_process")
def test_celery_skip_checks_skips_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_SKIP_CHECKS", "1")
    runs = reporting(monkeypatch, django_checks.Error("a bad setting", id="tests.E001"))
    checks.check_before_start()
    assert runs() == []
