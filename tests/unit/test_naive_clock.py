"""A project with USE_TZ = False (which scheduler.E040 refuses, where checks run: not in a
shell or a script) is told so by the scheduling API, not asked for an aware time."""

from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured

from scheduler import validation


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: validation.run_at_in(timedelta(minutes=5), now=datetime(2026, 1, 1)),
        lambda: validation.aware_datetime(datetime(2026, 1, 1)),
    ],
    ids=["schedule_in", "schedule_at"],
)
def test_naive_times_of_a_project_without_time_zones_name_use_tz(settings, schedule):
    # schedule_in(…, timedelta(minutes=5)) said "delay must be timezone-aware (e.g.
    # django.utils.timezone.now() + delta)": what the caller did, and what it computed.
    settings.USE_TZ = False
    with pytest.raises(ImproperlyConfigured, match=r"USE_TZ = True \(scheduler\.E040\)"):
        schedule()
