"""WSGI entry point."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

# After setup, which the checks need: refuse to serve a configuration they refuse.
from scheduler.checks import check_before_serving  # noqa: E402

check_before_serving()
