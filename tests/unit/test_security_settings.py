"""Deploy settings: HTTPS-only with DEBUG off, plain http in development, the proxy header.

Settings are read once per process, so each case runs in a child process with its own
environment.
"""

import json
import os
import subprocess

import pytest
from django.db import OperationalError
from django.db.backends.postgresql.base import DatabaseWrapper
from django.views.debug import ExceptionReporter, get_default_exception_reporter_filter

from project.reporting import ExceptionReporterFilter
from tests.processes import BIN, ROOT, free_port

SECRET_KEY = "x7-" + "k" * 20 + "-deploy-test-key-with-enough-entropy-qwertyuiop"
PRODUCTION = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": SECRET_KEY}
SECURITY_SETTINGS = [
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
]


def _run(args, env):
    variables = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SCHEDULER_"))
    }
    return subprocess.run(
        [str(BIN / "python"), *args],
        cwd=ROOT,
        env={**variables, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _settings(env):
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {SECURITY_SETTINGS!r}}}))"
    )
    result = _run(["-c", code], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_check_deploy_is_clean_with_debug_off_and_a_metrics_token():
    deployed = {**PRODUCTION, "SCHEDULER_METRICS_TOKEN": "scrape-token-0123456789"}
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], deployed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_of_metrics_open_to_anyone():
    # /metrics on the web server's host (the admin's, behind a public load balancer)
    # answered anyone: task and queue names, hosts, failure rates, and each scrape's cost.
    result = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "scheduler.W005" in said
    assert "SCHEDULER_METRICS_TOKEN" in said
    assert "no issues" not in said
    # Only a deploy check: development is not asked for one.
    result = _run(["manage.py", "check", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_is_https_only():
    assert _settings(PRODUCTION) == {
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 365 * 24 * 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
    }


def test_development_works_over_plain_http():
    current = _settings({"DJANGO_DEBUG": "true"})
    assert current["SECURE_SSL_REDIRECT"] is False
    assert current["SESSION_COOKIE_SECURE"] is False
    assert current["CSRF_COOKIE_SECURE"] is False
    assert current["SECURE_HSTS_SECONDS"] == 0


def test_behind_a_load_balancer_that_terminates_tls():
    current = _settings(
        {
            **PRODUCTION,
            "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
            "DJANGO_HSTS_SECONDS": "3600",
            "DJANGO_HSTS_PRELOAD": "false",
        }
    )
    assert current["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert (current["SECURE_HSTS_SECONDS"], current["SECURE_HSTS_PRELOAD"]) == (3600, False)
    assert current["SECURE_SSL_REDIRECT"] is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https", "HTTP header name"),
        ("DJANGO_HSTS_SECONDS", "a year", "whole number"),
        ("DJANGO_HSTS_SECONDS", "-1", "negative"),
        # Read as false, a misspelt "true" turned the protection off.
        ("DJANGO_SECURE_COOKIES", "enabled", "true or false"),
        ("DJANGO_SECURE_SSL_REDIRECT", "ture", "true or false"),
        ("DJANGO_DEBUG", "nope", "true or false"),
        # Compose's ${DJANGO_DEBUG} with the host's variable unset: an empty value read as
        # the default turned DEBUG on, over the image's DJANGO_DEBUG=false.
        ("DJANGO_DEBUG", "", "true or false"),
        ("DJANGO_SECURE_COOKIES", " ", "true or false"),
        # Blank, as an env file's "DJANGO_SECRET_KEY= " leaves it: every session and
        # password-reset link signed with a key anyone can guess.
        ("DJANGO_SECRET_KEY", "   ", "must be set"),
        # A traceback deep in dj_database_url or psycopg2 that never named the variable.
        ("DATABASE_URL", "postgress://u@db:5432/app", "scheme"),
        ("DATABASE_URL", "postgres://u@db:notaport/app", "DATABASE_URL"),
        ("DATABASE_URL", "sqlite:////tmp/app.db", "PostgreSQL"),
        ("DATABASE_URL", "postgres://u@db:5432", "database name"),
        # Passed the settings and the checks, and failed at the first SQS call.
        ("SQS_ENDPOINT_URL", "http://127.0.0.1:notaport", "http://host:port"),
        ("SQS_ENDPOINT_URL", "http://127.0.0.1:70000", "http://host:port"),
        # The dispatcher reached them; kombu gave the workers http://::1:9324 (no
        # brackets, refused by botocore) and dropped the path.
        ("SQS_ENDPOINT_URL", "http://[::1]:9324", "IPv6"),
        ("SQS_ENDPOINT_URL", "http://127.0.0.1:9324/queues", "path"),
    ],
)
def test_a_bad_value_is_a_clear_error(variable, value, message):
    result = _run(["manage.py", "check"], {**PRODUCTION, variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr
    assert message in result.stderr


def test_prometheus_scrapes_metrics_over_plain_http_while_the_site_redirects_to_https():
    # Prometheus scrapes a web process on its own port, inside the network: redirected
    # to https there, the scrape failed (nothing speaks TLS on that port).
    code = (
        "import django; django.setup(); from django.test import Client; c = Client(); "
        "print(c.get('/metrics').status_code, c.get('/admin/login/').status_code)"
    )
    secrets = {
        "SCHEDULER_METRICS_TOKEN": "t0ken-for-the-test",
        "DJANGO_ALLOWED_HOSTS": "testserver",
    }
    result = _run(["-c", code], {**PRODUCTION, **secrets})
    assert result.returncode == 0, result.stderr
    # 401: the view answered (it asks for the token); the admin is still https-only.
    assert result.stdout.split() == ["401", "301"]


def test_probes_from_inside_the_network_are_answered_whatever_host_they_name():
    # A load balancer's health check and a Prometheus scrape name the target by its
    # address, which ALLOWED_HOSTS does not list: both got 400 (DisallowedHost), and an
    # ALB's target group never became healthy. The site itself keeps the Host check.
    code = (
        "import django; django.setup(); from django.test import Client; c = Client(); "
        "host = {'HTTP_HOST': '10.0.1.23:8000'}; "
        "health = c.get('/healthz', **host); "
        "print(health.status_code, health.content.decode().strip(), "
        "c.get('/metrics', **host).status_code, c.get('/admin/login/', **host).status_code, "
        "c.get('/admin/login/', secure=True, **host).status_code)"
    )
    secrets = {
        "SCHEDULER_METRICS_TOKEN": "t0ken-for-the-test",
        "DJANGO_ALLOWED_HOSTS": "jobs.example.com",
    }
    result = _run(["-c", code], {**PRODUCTION, **secrets})
    assert result.returncode == 0, result.stderr
    # 401: the metrics view answered (it asks for the token).
    assert result.stdout.split() == ["200", "ok", "401", "400", "400"]


def test_error_reports_hide_the_database_url_and_its_password(settings):
    # Django's filter hides settings named like secrets; DATABASE_URL is not, and the
    # DEBUG page and the e-mails to ADMINS showed its password.
    settings.DATABASE_URL = "postgres://app:hunter2@db.internal:5432/app"
    settings.CELERY_BROKER_URL = "sqs://AKIDEXAMPLE:hunter3@"
    safe = get_default_exception_reporter_filter().get_safe_settings()
    assert safe["DATABASE_URL"] == safe["CELERY_BROKER_URL"] == "********************"
    assert "hunter" not in repr(safe)
    assert safe["DEBUG"] == settings.DEBUG  # the rest is still shown


def test_the_error_report_of_a_database_out_of_reach_hides_its_password(
    rf, settings, django_db_blocker
):
    # Only settings were cleaned: the DEBUG page of a request that found PostgreSQL out
    # of reach listed the frames' variables, the connection's parameters and DSN among
    # them, with the password in clear (11 times).
    password = "S3cret" + "PW-4242"  # as a whole, not in the source lines the page quotes
    params = {**settings.DATABASES["default"], "PASSWORD": password, "PORT": free_port()}
    unreachable = DatabaseWrapper(params, alias="unreachable")
    with django_db_blocker.unblock(), pytest.raises(OperationalError) as raised:
        unreachable.ensure_connection()
    error = raised.value
    reporter = ExceptionReporter(rf.get("/admin/"), type(error), error, error.__traceback__)
    page = reporter.get_traceback_html()
    assert "dsn" in page  # the frames' variables are shown...
    assert password not in page  # ...but not the password
    assert password not in reporter.get_traceback_text()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("host=db password=hunter2 dbname=app", "host=db password=******************** dbname=app"),
        ("password='hun ter\\'2' user=x", "password=******************** user=x"),
        ("sqs://AKID:hunter2@sqs.example", "sqs://AKID:********************@sqs.example"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_credentials_in_a_frames_strings_are_hidden(value, shown):
    cleaned = ExceptionReporterFilter().cleanse_variable
    assert cleaned("text", value) == shown
    # At any depth of its dicts, lists and tuples.
    assert cleaned("params", {"dsn": [(value,)]}) == {"dsn": [(shown,)]}


def test_a_frames_variables_named_as_secrets_are_hidden_and_only_those():
    cleaned = ExceptionReporterFilter().cleanse_variable
    assert cleaned("conn_params", {"user": "app", "password": "hunter2"}) == {
        "user": "app",
        "password": "********************",
    }
    assert cleaned("api_key", "k") == cleaned("auth_token", "t") == "********************"
    assert cleaned("unique_key", "capture-7") == "capture-7"  # no secret: kept for debugging


def test_a_frames_variable_nested_too_deep_to_walk_is_hidden_and_the_report_renders(rf):
    # JSON nested a thousand deep (json.loads takes it): cleaning it recursed until
    # RecursionError, and the DEBUG page and the e-mail to ADMINS failed.
    deep: list[object] = []
    for _ in range(1000):
        deep = [deep]
    assert ExceptionReporterFilter().cleanse_variable("body", deep) == [
        [[[[[[[[[[[[[[[[[[["********************"]]]]]]]]]]]]]]]]]]]
    ]
    try:
        raise ValueError(len(deep))
    except ValueError as error:
        reporter = ExceptionReporter(rf.get("/"), type(error), error, error.__traceback__)
    assert "ValueError" in reporter.get_traceback_html()


def test_an_empty_metrics_token_variable_opens_nothing():
    # Compose's ${SCHEDULER_METRICS_TOKEN} with the host's variable unset: read as unset,
    # the empty value left /metrics open to anyone, and no check said a word.
    env = {**PRODUCTION, "SCHEDULER_METRICS_TOKEN": "", "DJANGO_ALLOWED_HOSTS": "testserver"}
    checked = _run(["manage.py", "check"], env)
    assert checked.returncode != 0
    assert "scheduler.E001" in checked.stderr
    assert "SCHEDULER_METRICS_TOKEN" in checked.stderr
    code = (
        "import django; django.setup(); from django.test import Client; "
        "print(Client().get('/metrics', secure=True).status_code)"
    )
    scraped = _run(["-c", code], env)
    assert scraped.returncode == 0, scraped.stderr
    assert scraped.stdout.split() == ["401"]
