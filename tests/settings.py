"""Settings for the test suite: the project's, plus test apps with test tasks."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp", "tests.tasksapp"]

# A route, for the tests of a job's default queue.
CELERY_TASK_ROUTES = {"testapp.routed": {"queue": "routed-queue"}}

# testapp.rejects is acknowledged late to test Celery's Reject, and runs for no time:
# scheduler.W024 (a late ack past the visibility timeout runs twice) does not apply.
SILENCED_SYSTEM_CHECKS = ["scheduler.W024"]
