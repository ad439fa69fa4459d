"""Which errors are dependency outages (503 with Retry-After) and which are bugs (500).
Pure: exceptions built here; tests/integration/test_outages.py meets real outages."""

from __future__ import annotations

import pika.exceptions
import psycopg2
import pytest
import redis
from sqlalchemy import exc as sa_exc

from paxkit.errors import outage_of
from paxkit.faults import FaultInjected


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (sa_exc.OperationalError("SELECT 1", {}, psycopg2.OperationalError("closed")), "database"),
        (sa_exc.InterfaceError("SELECT 1", {}, psycopg2.InterfaceError("closed")), "database"),
        (
            sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back"),
            "database",
        ),
        (sa_exc.TimeoutError("QueuePool limit of size 16 overflow 16 reached"), "database"),
        (sa_exc.DisconnectionError("gone"), "database"),
        (psycopg2.OperationalError("could not connect to server"), "database"),
        (
            sa_exc.ProgrammingError("SELECT 1", {}, Exception("x"), connection_invalidated=True),
            "database",
        ),
        (redis.ConnectionError("Connection refused"), "redis"),
        (redis.TimeoutError("Timeout reading from socket"), "redis"),
        (pika.exceptions.AMQPConnectionError("refused"), "broker"),
        (pika.exceptions.StreamLostError("lost"), "broker"),
        (pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND"), "broker"),
    ],
)
def test_dependency_failures_are_outages(error, code):
    outage = outage_of(error)
    assert outage is not None
    assert outage.code == f"{code}_unavailable"


def test_an_injected_failure_is_a_503_not_a_bug():
    outage = outage_of(FaultInjected("injected failure at redpacket.before_commit"))
    assert outage is not None and outage.code == "fault_injected"


def test_an_error_raised_from_an_outage_is_that_outage():
    try:
        try:
            raise redis.ConnectionError("Connection refused")
        except redis.ConnectionError as err:
            raise RuntimeError("publishing failed") from err
    except RuntimeError as wrapped:
        outage = outage_of(wrapped)
    assert outage is not None and outage.code == "redis_unavailable"


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        KeyError("a bug"),
        sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        sa_exc.ProgrammingError("SELEC", {}, Exception("syntax error")),
        redis.ResponseError("WRONGTYPE"),
    ],
)
def test_bugs_are_not_outages(error):
    assert outage_of(error) is None
