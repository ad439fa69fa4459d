"""How the consumer treats a failed message (retry or dead-letter), and reconnect backoff."""

from __future__ import annotations

import pika
import psycopg2
import pytest
from sqlalchemy import exc as sa_exc

from paxkit.backoff import Backoff
from paxkit.consumer import Failure, classify, dead_letter_reason
from paxkit.errors import InvalidInput, UpstreamTimeout, UpstreamUnavailable
from paxkit.messaging import BranchReport, PoisonMessage, PublishFailed, QueueSpec


def db_error(kind: type[sa_exc.DBAPIError], invalidated: bool = False) -> sa_exc.DBAPIError:
    orig = psycopg2.OperationalError("boom")
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        db_error(sa_exc.OperationalError),  # connection refused, server gone, lock timeout
        db_error(sa_exc.InterfaceError),
        db_error(sa_exc.DatabaseError, invalidated=True),
        sa_exc.TimeoutError("QueuePool limit reached"),
        psycopg2.OperationalError("could not connect to server"),
        pika.exceptions.AMQPConnectionError("broker away"),
        PublishFailed("nacked"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError("timed out"),
        UpstreamUnavailable("inventory is unavailable"),
        UpstreamTimeout("inventory did not answer"),
    ],
)
def test_servers_or_the_network_away_is_transient_and_never_dead_lettered(error):
    assert classify(error) is Failure.TRANSIENT
    assert dead_letter_reason(error, unexpected=10_000, max_attempts=5) is None


def test_a_poison_message_is_dead_lettered_at_once():
    error = PoisonMessage("body is not JSON")
    assert classify(error) is Failure.POISON
    assert dead_letter_reason(error, unexpected=1, max_attempts=5) == "poison: body is not JSON"


@pytest.mark.parametrize(
    "error",
    [
        KeyError("user_id"),
        ValueError("bad"),
        db_error(sa_exc.IntegrityError),
        InvalidInput("x", "y"),
    ],
)
def test_an_unexpected_error_is_retried_a_few_times_then_dead_lettered(error):
    assert classify(error) is Failure.UNEXPECTED
    assert dead_letter_reason(error, unexpected=4, max_attempts=5) is None
    reason = dead_letter_reason(error, unexpected=5, max_attempts=5)
    assert reason is not None and reason.startswith("failed 5 times: ")


def test_retry_delays_grow_then_stay_at_the_last_tier():
    spec = QueueSpec("q", ("k",), retry_tiers_ms=(10, 20, 40))
    assert [spec.retry_delay_queue(n) for n in (1, 2, 3, 4, 50)] == [
        "q.retry.10",
        "q.retry.20",
        "q.retry.40",
        "q.retry.40",
        "q.retry.40",
    ]


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_success():
    backoff = Backoff(base_s=1.0, cap_s=8.0, jitter=lambda: 1.0)
    assert [backoff.failed() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.succeeded()
    assert backoff.failed() == 1.0
    halved = Backoff(base_s=1.0, cap_s=8.0, jitter=lambda: 0.0)
    assert halved.failed() == 0.5


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"gtid": "g", "branch": "b", "op": "action"},
        {"gtid": "g", "branch": "b", "op": "undo", "ok": True},
        {"gtid": 7, "branch": "b", "op": "action", "ok": True},
        {"gtid": "g", "branch": "b", "op": "action", "ok": "yes"},
        {"gtid": "g", "branch": "b", "op": "action", "ok": False, "reason": 3},
    ],
)
def test_a_report_that_is_not_one_is_poison(body):
    with pytest.raises(PoisonMessage):
        BranchReport.from_json(body)


def test_a_report_round_trips():
    report = BranchReport("g", "coupon", "compensate", True, None, "null")
    assert BranchReport.from_json(report.as_json()) == report
