"""Error reports (the DEBUG page, the e-mails to ADMINS) without the credentials of URLs."""

import re

from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like secrets (``…PASS…``, ``…KEY…``),
    also hiding those that are URLs whose credentials it would show: ``DATABASE_URL``
    (``postgres://user:password@host/db``) and Celery's broker and result URLs."""

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|BROKER_URL|RESULT_BACKEND",
        flags=re.IGNORECASE,
    )
