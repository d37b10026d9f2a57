"""scheduler.W003: the jobs' database connection gives up on a primary that went silent."""

import pytest
from django.db import connections

from scheduler.checks import DATABASE_TIMEOUTS, check_database_timeouts


def test_the_projects_database_sets_every_timeout():
    assert check_database_timeouts() == []


@pytest.mark.parametrize("unset", DATABASE_TIMEOUTS)
def test_a_connection_without_a_timeout_is_warned(monkeypatch, unset):
    options = dict(connections["default"].settings_dict["OPTIONS"])
    del options[unset]
    monkeypatch.setitem(connections["default"].settings_dict, "OPTIONS", options)

    [warning] = check_database_timeouts()

    assert warning.id == "scheduler.W003"
    assert f"sets no {unset}:" in warning.msg
    assert "15 minutes" in warning.msg


def test_another_database_engine_is_not_warned(monkeypatch):
    settings_dict = connections["default"].settings_dict
    monkeypatch.setitem(settings_dict, "ENGINE", "django.db.backends.sqlite3")
    monkeypatch.setitem(settings_dict, "OPTIONS", {})
    assert check_database_timeouts() == []
