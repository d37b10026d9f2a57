"""Probes from inside the network: a load balancer's health check and Prometheus' scrape.

They name the web process by its address (``10.0.1.23:8000``), which ``ALLOWED_HOSTS``
does not list, over plain http: :func:`answered_by_address`, first in ``MIDDLEWARE``,
answers their URLs before Django checks the Host header or redirects to https. They build
no URL from the Host header, which is what that check protects.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from django.views.decorators.http import require_safe

#: The names of the URLs answered whatever host the request names.
BY_ADDRESS = frozenset({"health", "scheduler-metrics"})


@require_safe
def health(request: HttpRequest) -> HttpResponse:  # noqa: ARG001 - a view's signature
    """The web process answers (a liveness check: it reads no database)."""
    return HttpResponse("ok\n", content_type="text/plain", headers={"Cache-Control": "no-store"})


def answered_by_address(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Middleware: the :data:`BY_ADDRESS` URLs' views, before the rest of the chain."""

    def middleware(request: HttpRequest) -> HttpResponse:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return get_response(request)
        if match.url_name not in BY_ADDRESS:
            return get_response(request)
        response: HttpResponse = match.func(request, *match.args, **match.kwargs)
        return response

    return middleware
