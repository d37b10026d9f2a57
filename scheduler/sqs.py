"""The SQS client and queue names, configured from Django settings."""

import re
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from django.conf import settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# kombu maps other characters of a Celery queue name to different SQS names; keeping to
# this set makes the Celery queue name and the SQS queue name the same string.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def is_valid_queue_name(name: object) -> bool:
    """Whether ``name`` is usable both as a Celery queue and as an SQS queue name."""
    return isinstance(name, str) and _QUEUE_NAME.fullmatch(name) is not None


def client_kwargs() -> dict[str, Any]:
    """boto3 client arguments: the emulator endpoint with dummy credentials, or AWS."""
    kwargs: dict[str, Any] = {"region_name": settings.AWS_REGION}
    if settings.SQS_ENDPOINT_URL:
        kwargs.update(
            endpoint_url=settings.SQS_ENDPOINT_URL,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - emulators accept any key
        )
    return kwargs


@cache
def _client(frozen_kwargs: tuple[tuple[str, Any], ...]) -> "SQSClient":
    # Short timeouts and few retries: the dispatcher holds row locks while it sends.
    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})
    return boto3.client("sqs", config=config, **dict(frozen_kwargs))


def get_client() -> "SQSClient":
    """A cached SQS client for the current settings (thread-safe, as boto3 clients are)."""
    return _client(tuple(sorted(client_kwargs().items())))
