"""Django settings.

This is the one place that reads the environment (12-factor). Every variable has a
default that works on a developer machine: PostgreSQL on 127.0.0.1 and, when
``SQS_ENDPOINT_URL`` is set, an SQS server on loopback. With ``SQS_ENDPOINT_URL``
unset, the broker is real Amazon SQS and credentials come from the standard AWS chain.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

from scheduler.conf import DEFAULT_QUEUE_NAME

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    # Unset only: an empty value (compose's ${VAR} with the host's unset) is no answer,
    # and read as the default it turned DEBUG on over the image's DJANGO_DEBUG=false.
    if value is None:
        return default
    word = value.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    # A misspelt "true" must not turn a protection off.
    raise ImproperlyConfigured(
        f"{name} must be true or false (1/0, yes/no, on/off), not {value!r}."
    )


DEBUG = _env_bool("DJANGO_DEBUG", True)
# The DEBUG page and error e-mails hide DATABASE_URL and the broker URL too (credentials).
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.reporting.ExceptionReporterFilter"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
# Blank counts as unset: a key of spaces signs sessions with a key anyone can guess.
if not SECRET_KEY.strip():
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set, and not blank, when DJANGO_DEBUG is off."
        )
    SECRET_KEY = "django-insecure-development-only-key"  # noqa: S105 - debug only

ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "scheduler",
    "payments",
]

MIDDLEWARE = [
    # The health check and /metrics, by the host's address and over http (project.probes).
    "project.probes.answered_by_address",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"

# PostgreSQL. With DATABASE_URL unset, the default below; `make run` and `make test` then
# start an embedded PostgreSQL instead when nothing answers there (devtools/database.py).
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/longdelay"
DATABASE_URL = os.environ.get("DATABASE_URL") or None


POSTGRESQL_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")


def _database(url: str) -> dj_database_url.DBConfig:
    """DATABASE_URL's database, or an error that names the variable."""
    try:
        # No server-side cursors (QuerySet.iterator(), the admin's drop-downs): behind a
        # pooler in transaction mode (PgBouncer, RDS Proxy) a cursor's DECLARE and its
        # FETCH run in transactions of their own, on any session, and the page fails
        # with "cursor … does not exist". Nothing here needs them.
        database = dj_database_url.parse(
            url, conn_max_age=60, conn_health_checks=True, disable_server_side_cursors=True
        )
    except ValueError as error:  # the scheme, the port (dj_database_url's errors)
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {error}") from None
    # PostgreSQL's own backend, or PostGIS's built on it.
    if database.get("ENGINE") not in POSTGRESQL_ENGINES:
        raise ImproperlyConfigured(
            f"DATABASE_URL must name a PostgreSQL database (postgres://…), not {urlsplit(url).scheme}://…"
        )
    if not database.get("NAME"):
        raise ImproperlyConfigured(
            "DATABASE_URL must end with the database name (postgres://user@host:5432/name)."
        )
    return database


DATABASES = {"default": _database(DATABASE_URL or DEFAULT_DATABASE_URL)}
# A failover can lose the primary with its host: nothing answers, nothing is refused,
# and a query on a connection to it would wait out the kernel's TCP retransmissions
# (about 15 minutes), a dispatcher's tick or a worker's heartbeat with it. These libpq
# parameters give such a connection up within seconds (checked: scheduler.W003);
# DATABASE_URL's own (?connect_timeout=10) win.
DATABASES["default"]["OPTIONS"] = {
    "connect_timeout": 5,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # milliseconds
    **DATABASES["default"].get("OPTIONS", {}),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- HTTPS ------------------------------------------------------------------------------
# With DEBUG off, the site is HTTPS-only (`manage.py check --deploy` is clean); with DEBUG
# on (`make run`), plain http works. Behind a load balancer that terminates TLS, set
# DJANGO_SECURE_PROXY_SSL_HEADER to the header it sets (X-Forwarded-Proto), so Django
# knows a request came in over https and does not redirect it forever.


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}.") from None
    if number < 0:
        raise ImproperlyConfigured(f"{name} must not be negative, got {value!r}.")
    return number


def _proxy_ssl_header(name: str) -> tuple[str, str] | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not all(part.isalnum() for part in value.split("-")):
        raise ImproperlyConfigured(
            f"{name} must be an HTTP header name such as X-Forwarded-Proto, got {value!r}."
        )
    return f"HTTP_{value.upper().replace('-', '_')}", "https"


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header("DJANGO_SECURE_PROXY_SSL_HEADER")
SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SECURE_HSTS_SECONDS = _env_int("DJANGO_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_HSTS_PRELOAD", True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # botocore logs every request at DEBUG and some retries at INFO.
        "botocore": {"level": "WARNING"},
    },
}

# --- Amazon SQS -------------------------------------------------------------------------
# The scheduler app reads these as its own SCHEDULER_SQS_* settings; Celery's broker is
# configured from the same values so that the two cannot disagree.
SCHEDULER_SQS_ENDPOINT_URL = os.environ.get("SQS_ENDPOINT_URL") or None
SCHEDULER_SQS_REGION = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
SCHEDULER_QUEUE_NAME = os.environ.get("SCHEDULER_QUEUE_NAME") or DEFAULT_QUEUE_NAME
SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS = 300
SCHEDULER_SQS_WAIT_TIME_SECONDS = 10

if SCHEDULER_SQS_ENDPOINT_URL:
    _endpoint = urlsplit(SCHEDULER_SQS_ENDPOINT_URL)
    try:
        _endpoint_port = _endpoint.port  # raises on a port that is no number from 0 to 65535
    except ValueError:
        _endpoint_port = 0
    if _endpoint.scheme not in {"http", "https"} or not _endpoint.hostname or _endpoint_port == 0:
        raise ImproperlyConfigured(
            f"SQS_ENDPOINT_URL must look like http://host:port, got {SCHEDULER_SQS_ENDPOINT_URL!r}."
        )
    # The workers' endpoint is kombu's, rebuilt from the broker URL's host and port: an
    # IPv6 address loses its brackets there (botocore refuses it), and a path is lost.
    if ":" in _endpoint.hostname or _endpoint.path.strip("/"):
        raise ImproperlyConfigured(
            "SQS_ENDPOINT_URL must be http://host:port, with a host name or IPv4 address "
            f"(the workers' SQS client cannot take an IPv6 address) and no path, got "
            f"{SCHEDULER_SQS_ENDPOINT_URL!r}."
        )
    # An emulator (moto, ElasticMQ) accepts any credentials; kombu has no endpoint
    # option, so the endpoint travels as the broker URL's host and port.
    CELERY_BROKER_URL = f"sqs://local:local@{_endpoint.netloc}"
    _sqs_is_secure = _endpoint.scheme == "https"
else:
    # Real AWS: kombu and boto3 take credentials from the standard chain (IAM role).
    CELERY_BROKER_URL = "sqs://"
    _sqs_is_secure = True

CELERY_BROKER_TRANSPORT_OPTIONS = {
    "region": SCHEDULER_SQS_REGION,
    "is_secure": _sqs_is_secure,
    # Long polling: a receive call returns as soon as a message becomes visible, so a
    # job released by DelaySeconds reaches a worker at once, with few empty receives.
    "wait_time_seconds": SCHEDULER_SQS_WAIT_TIME_SECONDS,
    # After an empty long poll, poll again almost at once rather than sleeping a second.
    "polling_interval": 0.1,
    # Jobs are claimed in PostgreSQL and acknowledged before they run (the lease, not
    # SQS, recovers a dead worker), so this only has to cover the eta wait (about the
    # delivery lead, 2 s) and the time to claim.
    "visibility_timeout": SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS,
    # The client of every call but the event loop's receives, acks and hand-backs (plain
    # tasks' sends from web and workers): on botocore's defaults (60 s to connect, 60 s
    # to read, three tries) an SQS that took the connection and never answered held up a
    # caller for minutes. Longer than a long poll, which a worker without the event loop
    # (--pool=solo) makes through it. Acks and hand-backs, which the event loop waits
    # for, give up after 2 s on a client of the app's transport's own.
    "client-config": {
        "connect_timeout": 5,
        "read_timeout": SCHEDULER_SQS_WAIT_TIME_SECONDS + 5,
        "retries": {"total_max_attempts": 2},
    },
}
# kombu's SQS transport, but a failed receive (SQS restarting, a 5xx, a missing queue) is
# logged and polled again with back-off instead of stopping the worker.
CELERY_BROKER_TRANSPORT = "scheduler.worker.transport:Transport"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = SCHEDULER_QUEUE_NAME
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# One message at a time per worker process: a prefetched message would wait behind a
# long job instead of going to an idle worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# And none while every process is busy (the scheduler's consumer applies it to SQS):
# Celery frees a message's slot as its task starts, so a worker running long jobs took
# due jobs that then waited there.
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# stdout and stderr as they are (a container's log): redirected to a logger, a traceback
# printed as beat or the worker exits came out as a thousand one-fragment WARNING lines.
CELERY_WORKER_REDIRECT_STDOUTS = False
# A message the worker cannot run is dropped with one log line, never its body.
CELERY_WORKER_CONSUMER = "scheduler.worker.consumer:Consumer"
# Keep each worker process's database connection from task to task (Celery's Django
# fixup otherwise reconnects around every task, most of a job's claim); the scheduler
# closes it as Django does between requests: after CONN_MAX_AGE, or when it is broken.
CELERY_DB_REUSE_MAX = 1000
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# django-celery-beat's DatabaseScheduler that runs dispatcher ticks in the beat process
# itself: they never wait in the job queue behind long jobs (README "How many processes").
CELERY_BEAT_SCHEDULER = "scheduler.dispatch.beat:DispatchingScheduler"

# --- django.tasks ----------------------------------------------------------------------
# Django 6.0's django.tasks, or the django-tasks backport on 5.2, with jobs as its tasks.
TASKS = {"default": {"BACKEND": "scheduler.backends.SchedulerBackend"}}
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")  # the backport's system checks

# --- Metrics ----------------------------------------------------------------------------
# /metrics wants "Authorization: Bearer <token>" once this is set (README "Metrics").
# Unset only leaves it open: an empty value (compose's ${VAR} with the host's unset) is
# kept, for the checks to refuse and the view to let no one in.
SCHEDULER_METRICS_TOKEN = os.environ.get("SCHEDULER_METRICS_TOKEN")

# --- Admin ------------------------------------------------------------------------------
# Tasks an operator may schedule from the admin (none unless listed).
SCHEDULER_ADMIN_TASKS = ["payments.capture_payment"]
