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
#: The names of a frame's variables, and of keys in them, whose values are hidden whole:
#: narrower than the settings' pattern, as a frame's ``unique_key`` is no secret.
_SECRET_NAMES = re.compile(
    "PASS|SECRET|TOKEN|SIGNATURE|CREDENTIAL|COOKIE|AUTHORIZATION|API_?KEY|PRIVATE_?KEY|"
    "ACCESS_?KEY|DATABASE_URL|BROKER_URL",
    flags=re.IGNORECASE,
)
#: How deep into a frame's dicts, lists and tuples values are cleaned: deeper ones are
#: hidden (JSON a thousand levels deep would exhaust the recursion, and the report).
_DEPTH = 20


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, which hides settings named like secrets (``…PASS…``, ``…KEY…``),
    also hiding those that are URLs whose credentials it would show: ``DATABASE_URL``
    (``postgres://user:password@host/db``) and Celery's broker and result URLs.

    A traceback's local variables are cleaned too: a request that could not reach
    PostgreSQL showed the connection's parameters and DSN, password included.
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
        return {name: self.cleanse_variable(name, value) for name, value in variables}.items()

    def cleanse_variable(self, name: object, value: Any, depth: int = 0) -> Any:
        """``value`` of the variable or key ``name``, its secrets hidden: whole when the
        name says it is one, else the passwords of the connection strings and URLs in
        it, through plain dicts, lists and tuples (their subclasses, such as Django's
        request data, are left as Django's filter left them)."""
        if isinstance(name, str) and _SECRET_NAMES.search(name):
            return self.cleansed_substitute
        if isinstance(value, str):
            return _CREDENTIALS.sub(self._hide_password, value)
        if type(value) not in (dict, list, tuple):
            return value
        if depth >= _DEPTH:
            return self.cleansed_substitute
        if type(value) is dict:
            return {key: self.cleanse_variable(key, item, depth + 1) for key, item in value.items()}
        return type(value)(self.cleanse_variable(None, item, depth + 1) for item in value)

    def _hide_password(self, match: re.Match[str]) -> str:
        if match["key"] is not None:
            return f"{match['key']}{self.cleansed_substitute}"
        return f"{match['url']}{self.cleansed_substitute}@"
