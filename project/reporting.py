"""Error reports (the DEBUG page, the e-mails to ADMINS) without the credentials of URLs
and connection strings."""

import re
from collections.abc import ItemsView
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter
from typing_extensions import override

#: A password in a libpq connection string (``password=…``, quoted or not) or in a URL
#: (``scheme://user:password@host``).
_CREDENTIALS = re.compile(
    r"(?P<key>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)|(?P<url>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@",
    flags=re.IGNORECASE,
)


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like secrets (``…PASS…``, ``…KEY…``),
    also hiding those that are URLs whose credentials it would show: ``DATABASE_URL``
    (``postgres://user:password@host/db``) and Celery's broker and result URLs.

    A traceback's local variables are cleaned the same way: a request that could not
    reach PostgreSQL showed the connection's parameters and DSN, password included.
    """

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|BROKER_URL|RESULT_BACKEND",
        flags=re.IGNORECASE,
    )

    @override
    def get_traceback_frame_variables(
        self, request: HttpRequest | None, tb_frame: Any
    ) -> ItemsView[str, Any]:
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return {name: self._cleanse_variable(name, value) for name, value in variables}.items()

    def _cleanse_variable(self, name: str, value: Any) -> Any:
        value = self.cleanse_setting(name, value)
        if not isinstance(value, str):
            return value
        return _CREDENTIALS.sub(self._hide_password, value)

    def _hide_password(self, match: re.Match[str]) -> str:
        kept = match["key"] if match["key"] is not None else f"{match['url']}"
        suffix = "" if match["key"] is not None else "@"
        return f"{kept}{self.cleansed_substitute}{suffix}"
