"""The SQS client, configured from the ``SCHEDULER_SQS_*`` settings."""

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from scheduler.conf import scheduler_settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def client_kwargs() -> dict[str, Any]:
    """boto3 client arguments: an SQS-compatible server with dummy credentials, or AWS."""
    kwargs: dict[str, Any] = {}
    if scheduler_settings.SQS_REGION:
        kwargs["region_name"] = scheduler_settings.SQS_REGION
    if endpoint := scheduler_settings.SQS_ENDPOINT_URL:
        kwargs.update(
            endpoint_url=endpoint,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 - emulators accept any key
        )
    return kwargs


@cache
def _client(frozen_kwargs: tuple[tuple[str, Any], ...], *, quick: bool) -> "SQSClient":
    # The app builds every request itself and SQS validates them anyway: checking each
    # one against the service model first would cost a fifth of a call's CPU.
    if quick:
        # For a page or a scrape that shows a queue's depth: answer fast or not at all.
        config = Config(
            connect_timeout=1,
            read_timeout=2,
            retries={"max_attempts": 0},
            parameter_validation=False,
        )
    else:
        # Short timeouts and few retries: the dispatcher holds row locks while it sends.
        config = Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"max_attempts": 2},
            parameter_validation=False,
        )
    return boto3.client("sqs", config=config, **dict(frozen_kwargs))


def get_client(*, quick: bool = False) -> "SQSClient":
    """A cached SQS client for the current settings (thread-safe, as boto3 clients are).

    ``quick``: second-long timeouts and no retry, for a read that must not hold up its
    caller (a metrics scrape) when SQS is slow or out of reach.
    """
    return _client(tuple(sorted(client_kwargs().items())), quick=quick)
