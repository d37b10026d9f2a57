"""Which SQS errors refuse one queue for good, and which are an outage to back off from."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from scheduler.dispatch.publisher import _queue_refused


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "..."}}, "SendMessageBatch")


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
