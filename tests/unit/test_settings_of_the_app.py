"""The app needs no setting of the project's own: every one has a SCHEDULER_* default."""

from scheduler.queue_needs import queue_attributes
from scheduler.sqs import client_kwargs


def test_a_project_without_sqs_or_celery_settings_gets_working_defaults(settings):
    for name in (
        "SCHEDULER_SQS_ENDPOINT_URL",
        "SCHEDULER_SQS_REGION",
        "SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS",
        "SCHEDULER_SQS_WAIT_TIME_SECONDS",
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        # The names the app used to read from the project.
        "AWS_REGION",
        "SQS_ENDPOINT_URL",
    ):
        if hasattr(settings, name):
            delattr(settings, name)
    # Amazon SQS, in boto3's default region, with the default queue timings.
    assert client_kwargs() == {}
    attributes = queue_attributes("arn:aws:sqs:eu-west-1:1:q-dlq")
    assert (attributes["VisibilityTimeout"], attributes["ReceiveMessageWaitTimeSeconds"]) == (
        "300",
        "10",
    )


def test_the_endpoint_and_region_settings_reach_the_client(settings):
    settings.SCHEDULER_SQS_ENDPOINT_URL = "http://127.0.0.1:9324"
    settings.SCHEDULER_SQS_REGION = "eu-west-1"
    assert client_kwargs() == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:9324",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
