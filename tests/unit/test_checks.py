import pytest
from django.core.checks import run_checks
from django.test import override_settings

from scheduler.checks import check_settings
from scheduler.dispatch.queues import refusal


def ids(**overrides):
    with override_settings(**overrides):
        return [error.id for error in check_settings()]


def test_defaults_pass():
    assert ids() == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"SCHEDULER_BATCH_SIZE": 0}, "scheduler.E001"),
        ({"SCHEDULER_LEASE_SECONDS": "60"}, "scheduler.E001"),
        (
            {"SCHEDULER_MAX_DELAY_SECONDS": 901, "SCHEDULER_LOOKAHEAD_SECONDS": 300},
            "scheduler.E002",
        ),
        (
            {"SCHEDULER_MAX_DELAY_SECONDS": 100, "SCHEDULER_LOOKAHEAD_SECONDS": 101},
            "scheduler.E003",
        ),
        (
            {"SCHEDULER_LOOKAHEAD_SECONDS": 5, "SCHEDULER_DISPATCH_INTERVAL_SECONDS": 5},
            "scheduler.E004",
        ),
        # A job coming into the lookahead just after a tick is sent a tick later, 0.1 s
        # before its time where SQS should release it 2 s before: it reached workers late.
        (
            {
                "SCHEDULER_LOOKAHEAD_SECONDS": 10,
                "SCHEDULER_DISPATCH_INTERVAL_SECONDS": 9.9,
                "SCHEDULER_DELIVERY_LEAD_SECONDS": 2,
                "SCHEDULER_MAX_DELAY_SECONDS": 10,
            },
            "scheduler.E004",
        ),
        ({"SCHEDULER_RETRY_BACKOFF_MAX_SECONDS": 10}, "scheduler.E005"),
        ({"SCHEDULER_QUEUE_NAME": "has.dots"}, "scheduler.E006"),
        ({"SCHEDULER_METRICS_TOKEN": ""}, "scheduler.E001"),
        ({"SCHEDULER_METRICS_TOKEN": "two words"}, "scheduler.E001"),
        ({"SCHEDULER_METRICS_TOKEN": "naïve"}, "scheduler.E001"),
        ({"SCHEDULER_METRICS_TOKEN": 12345}, "scheduler.E001"),
        ({"SCHEDULER_METRICS_WINDOW_SECONDS": 0}, "scheduler.E001"),
        ({"SCHEDULER_METRICS_WINDOW_SECONDS": 86401}, "scheduler.E001"),
        ({"SCHEDULER_DISPATCH_INTERVAL_SECONDS": 0}, "scheduler.E001"),
        ({"SCHEDULER_DISPATCH_INTERVAL_SECONDS": float("nan")}, "scheduler.E001"),
        ({"SCHEDULER_SQS_ENDPOINT_URL": "localhost:9324"}, "scheduler.E001"),
        ({"SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS": 43201}, "scheduler.E001"),
        ({"SCHEDULER_SQS_WAIT_TIME_SECONDS": 21}, "scheduler.E001"),
        ({"SCHEDULER_SQS_REGION": ""}, "scheduler.E001"),
        # AWS_DEFAULT_REGION with a stray space: botocore refused it at the first call.
        ({"SCHEDULER_SQS_REGION": "us-east-1 "}, "scheduler.E001"),
        ({"SCHEDULER_SQS_REGION": "-us-east-1"}, "scheduler.E001"),
        # botocore takes it, but AWS's region names are lower case: no region is "EU-WEST-1".
        ({"SCHEDULER_SQS_REGION": "EU-WEST-1"}, "scheduler.E001"),
        # An int too large for a float: the check itself crashed (OverflowError).
        ({"SCHEDULER_DISPATCH_INTERVAL_SECONDS": 10**400}, "scheduler.E001"),
        # Dead workers' jobs waited a recovery interval (a day) instead of about a lease.
        ({"SCHEDULER_RECOVERY_INTERVAL_SECONDS": 86_400}, "scheduler.E012"),
        (
            {"SCHEDULER_LEASE_SECONDS": 10, "SCHEDULER_HEARTBEAT_INTERVAL_SECONDS": 6},
            "scheduler.E007",
        ),
        # Exactly half: one missed beat, and the next comes as the lease ends (plus its
        # own round trip), after a recovery tick may have taken the live job for dead.
        (
            {"SCHEDULER_LEASE_SECONDS": 60, "SCHEDULER_HEARTBEAT_INTERVAL_SECONDS": 30},
            "scheduler.E007",
        ),
        ({"SCHEDULER_DELIVERY_LEAD_SECONDS": 300}, "scheduler.E008"),
        # A worker holds a job's message unacknowledged for the lead: SQS would hand it
        # to another worker meanwhile, and after five such receives to the dead letters.
        (
            {"SCHEDULER_DELIVERY_LEAD_SECONDS": 200, "SCHEDULER_LOOKAHEAD_SECONDS": 600},
            "scheduler.E009",
        ),
        # SQS's delay is whole seconds, rounded down: a message comes up to a second more
        # ahead than the lead.
        (
            {"SCHEDULER_DELIVERY_LEAD_SECONDS": 0.4, "SCHEDULER_SQS_VISIBILITY_TIMEOUT_SECONDS": 1},
            "scheduler.E009",
        ),
        ({"SCHEDULER_RECOVERY_INTERVAL_SECONDS": 0}, "scheduler.E001"),
        ({"SCHEDULER_RECOVERY_INTERVAL_SECONDS": "5"}, "scheduler.E001"),
        # "Keep them forever": a cutoff a million days back is no date, and the purge failed.
        ({"SCHEDULER_RETENTION_DAYS": 1_000_000}, "scheduler.E001"),
        # Accepted, each failed at run time: timedelta or the back-off overflowed, int4 did.
        ({"SCHEDULER_LEASE_SECONDS": 86_401}, "scheduler.E001"),
        ({"SCHEDULER_STALE_AFTER_SECONDS": 10**14}, "scheduler.E001"),
        ({"SCHEDULER_STALE_AFTER_SECONDS": 12 * 3600 + 1}, "scheduler.E001"),
        ({"SCHEDULER_RETRY_BACKOFF_SECONDS": 2_592_001}, "scheduler.E001"),
        ({"SCHEDULER_RETRY_BACKOFF_MAX_SECONDS": 2_592_001}, "scheduler.E001"),
        ({"SCHEDULER_DEFAULT_MAX_ATTEMPTS": 2**31}, "scheduler.E001"),
        ({"SCHEDULER_BATCH_SIZE": 10_001}, "scheduler.E001"),
        # Accepted, each a busy loop: a tick, a beat or a recovery a microsecond apart.
        ({"SCHEDULER_DISPATCH_INTERVAL_SECONDS": 1e-6}, "scheduler.E001"),
        ({"SCHEDULER_HEARTBEAT_INTERVAL_SECONDS": 0.01}, "scheduler.E001"),
        ({"SCHEDULER_RECOVERY_INTERVAL_SECONDS": 0.099}, "scheduler.E001"),
        ({"SCHEDULER_DELIVERY_LEAD_SECONDS": 1e-9}, "scheduler.E001"),
    ],
)
def test_each_bad_setting_is_reported(overrides, expected):
    assert expected in ids(**overrides)


def test_an_error_names_the_setting_and_what_it_must_be():
    with override_settings(SCHEDULER_DISPATCH_INTERVAL_SECONDS="5"):
        [error] = check_settings()
    assert error.msg == (
        "SCHEDULER_DISPATCH_INTERVAL_SECONDS must be a number of seconds of at least 0.1, got '5'."
    )


def test_a_fractional_dispatch_interval_is_fine():
    assert ids(SCHEDULER_DISPATCH_INTERVAL_SECONDS=0.5) == []


def test_lowered_limits_for_tests_are_consistent():
    assert (
        ids(
            SCHEDULER_MAX_DELAY_SECONDS=4,
            SCHEDULER_LOOKAHEAD_SECONDS=3,
            SCHEDULER_DISPATCH_INTERVAL_SECONDS=1,
        )
        == []
    )


def test_a_metrics_token_is_accepted():
    assert ids(SCHEDULER_METRICS_TOKEN="Zq8-7Hk_Lw.mP2~x") == []


@pytest.mark.parametrize("token", ["pr0d-metrics-t0ken-9f8e7d\n", "pr0d metrics t0ken"])
def test_a_secret_setting_refused_is_not_quoted(token):
    # A secret file's trailing newline stopped every process, each printing the token.
    with override_settings(SCHEDULER_METRICS_TOKEN=token):
        [error] = check_settings()
    said = f"{error.msg} {error.hint}"
    assert "t0ken" not in said
    assert f"a str of {len(token)} characters, not shown" in said


def test_a_queue_name_with_no_room_for_its_dead_letter_queue_warns():
    # 77-80 characters passed every check; scheduler_create_queue then refused it, and
    # the dead-letter alert and metric watch a <name>-dlq that cannot exist.
    def warned(name):
        with override_settings(SCHEDULER_QUEUE_NAME=name):
            return [message.id for message in run_checks() if message.id == "scheduler.W006"]

    assert warned("q" * 77) == ["scheduler.W006"]
    assert warned("q" * 76) == []


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9324"])
def test_no_sqs_region_anywhere_is_an_error(endpoint, settings, monkeypatch):
    # The dispatcher's client raised NoRegionError at every tick (an endpoint URL does
    # not spare it one) while the workers polled kombu's us-east-1, and no check said so;
    # scheduler_create_queue said "Amazon SQS in None".
    settings.SCHEDULER_SQS_REGION = None
    settings.SCHEDULER_SQS_ENDPOINT_URL = endpoint
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    [error] = [message for message in run_checks() if message.id == "scheduler.E013"]
    assert "no AWS region" in error.msg
    assert "SCHEDULER_SQS_REGION" in error.hint

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert not [message for message in run_checks() if message.id == "scheduler.E013"]


def test_sqs_out_of_reach_without_a_region_says_no_region_not_none(settings, monkeypatch):
    settings.SCHEDULER_SQS_REGION = None
    settings.SCHEDULER_SQS_ENDPOINT_URL = None
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    said = refusal(ValueError("You must specify a region."))
    assert "None" not in said
    assert "no region" in said
