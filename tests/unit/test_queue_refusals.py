"""Which SQS errors refuse one queue for good, and which are an outage to back off from."""

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from scheduler.dispatch.publisher import _queue_refused, _transient


def _client_error(code: str, status: int = 0) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "..."}}
    response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SendMessageBatch")


@pytest.mark.parametrize(
    "code",
    [
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "AccessDenied",
        "AccessDeniedException",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
        "KMS.AccessDeniedException",
        "KMS.DisabledException",
    ],
)
def test_a_queue_that_does_not_exist_or_may_not_be_used_is_refused(code):
    assert _queue_refused(_client_error(code))


@pytest.mark.parametrize(
    "code",
    [
        "RequestThrottled",
        "ThrottlingException",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    ],
)
def test_throttling_failures_and_credentials_are_an_outage(code):
    assert not _queue_refused(_client_error(code))


def test_an_unreachable_endpoint_is_an_outage():
    assert not _queue_refused(EndpointConnectionError(endpoint_url="https://sqs.example"))


@pytest.mark.parametrize(
    "code",
    ["InvalidParameterValue", "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"],
)
def test_messages_sqs_refuses_refuse_their_queue(code):
    # Made again, the call fails again: taken for an outage, the queue's jobs, the
    # oldest, ended every tick at their batch, holding back every other queue's.
    assert _queue_refused(_client_error(code, 400))


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ExpiredToken", 400),
        ("InvalidClientTokenId", 403),
        ("SignatureDoesNotMatch", 403),
        # SQS's JSON protocol's for a skewed clock or a bad signature.
        ("InvalidSignatureException", 403),
        ("InvalidSecurity", 403),
        ("RequestThrottled", 403),
        ("ThrottlingException", 400),
        ("TooManyRequests", 429),
        ("RequestTimeout", 400),
        ("SomethingNew", 400),
    ],
)
def test_other_client_errors_are_an_outage_not_a_refused_queue(code, status):
    # Said of every queue alike: taken for refusals, each queue was refused in turn, the
    # loop never backed off, and a split chunk made eleven calls where one failed.
    assert not _queue_refused(_client_error(code, status))


@pytest.mark.parametrize(
    "code",
    [
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    ],
)
def test_what_botocore_retries_is_tried_again(code):
    assert _transient(_client_error(code, 400))
