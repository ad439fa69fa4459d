"""msg mode never strands an order: lost messages are sent again, a broker stopped under
way loses nothing, and a participant's database down for longer than any retry schedule
ever allowed only delays the orders.

The stack here is one of the module's own (own ports, databases, Redis db), on a
RabbitMQ node of its own and with its redpacket database in a Postgres cluster of its
own, so the tests can stop those servers and nothing else. PAXMART_OUTAGE_S sets the
outage (90 s by default); it must stay above the ~66 s after which transient failures used
to be dead-lettered.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis
import requests

from infra.chaos.servers import OwnRabbit, RabbitPorts, work_dir
from infra.launcher import WORKER_SUFFIX, Stack
from infra.pgcluster import ensure_cluster, stop_cluster
from paxkit.config import Settings
from paxkit.db import Database, make_engine
from paxkit.messaging import (
    BEGUN,
    PLACED,
    REPORTS_QUEUE,
    SETTLEMENTS_QUEUE,
    Topology,
    branch_key,
    connect,
    delete_topology,
    participant_queue,
    queue_depths,
)
from paxkit.migrate import migrate_all
from tests.conftest import SLOT, TEST_ENV
from tests.e2e.conftest import ADMIN, Api, stack_ports
from tests.helpers import wait_until

OUTAGE_S = float(os.environ.get("PAXMART_OUTAGE_S", "90"))
OLD_DEAD_LETTER_AFTER_S = 66  # 1 + 5 + 30 + 30 s of retry tiers, then the dead-letter queue
PARTICIPANT = "redpacket"
PORT_OFFSET = 50
PREFIX = f"paxmart_test{SLOT or ''}_strand_"
RESEND_S = 15
ORDERS_PER_S = 4.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OwnStack:
    stack: Stack
    api: Api
    settings: Settings
    cluster: Settings  # where the participant's database lives
    broker: OwnRabbit
    dbs: dict[str, Database] = field(default_factory=dict)

    @property
    def topology(self) -> Topology:
        return Topology.of(self.settings)

    def queue(self, name: str) -> str:
        spec = SETTLEMENTS_QUEUE if name == "order" else participant_queue(name)
        return self.topology.queue(spec).name


def stack_env(cluster_port: int, amqp_url: str) -> dict[str, str]:
    return {
        **TEST_ENV,
        **stack_ports(PORT_OFFSET),
        "PAXMART_DB_PREFIX": PREFIX,
        "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{10 - SLOT}",
        f"PAXMART_{PARTICIPANT.upper()}_DB_URL": (
            f"postgresql://postgres@127.0.0.1:{cluster_port}/{PREFIX}{PARTICIPANT}"
        ),
        "PAXMART_MSG_RESEND_S": str(RESEND_S),
        "PAXMART_AMQP_URL": amqp_url,
    }


def stack_settings(base: Settings, env: dict[str, str], cluster_port: int) -> Settings:
    """The settings the stack's components read from `env`, for migrating and asserting."""
    urls = {
        name: f"postgresql://postgres@127.0.0.1:{base.pg_port}/{PREFIX}{name}"
        for name in (*base.components, *base.acceptors)
    }
    urls[PARTICIPANT] = env[f"PAXMART_{PARTICIPANT.upper()}_DB_URL"]
    return replace(
        base,
        db_prefix=PREFIX,
        db_urls=urls,
        redis_url=env["PAXMART_REDIS_URL"],
        amqp_url=env["PAXMART_AMQP_URL"],
        mq_namespace=PREFIX.rstrip("_"),
    )


@pytest.fixture(scope="module")
def own(fresh_databases: Settings) -> Iterator[OwnStack]:
    cluster = replace(fresh_databases, pg_port=free_port())
    ensure_cluster(cluster, name=PARTICIPANT)
    folder = work_dir(fresh_databases.state_dir) / f"strand-rabbitmq{SLOT}"
    ports = RabbitPorts(free_port(), free_port(), f"paxmart_strand{SLOT}@localhost")
    broker = OwnRabbit(folder, ports).start()
    env = stack_env(cluster.pg_port, broker.url)
    settings = stack_settings(fresh_databases, env, cluster.pg_port)
    migrate_all(settings, reset=True)
    delete_topology(settings.amqp_url, Topology.of(settings))
    redis.Redis.from_url(settings.redis_url, socket_timeout=2).flushdb()
    dbs = {n: Database(make_engine(u, pool_size=2)) for n, u in settings.db_urls.items()}
    try:
        log_dir = fresh_databases.state_dir / "test-logs-strand"
        with Stack(env, log_dir, workers=2, threads=8) as stack:
            yield OwnStack(stack, Api(stack.url("gateway")), settings, cluster, broker, dbs)
    finally:
        for db in dbs.values():
            db.dispose()
        stop_cluster(cluster, name=PARTICIPANT)
        broker.stop()


def msg_order(user: int, sku: int, red_packet_cents: int = 10) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": f"SKU-{sku:04d}", "qty": 1}],
        "red_packet_cents": red_packet_cents,
        "mode": "msg",
    }


def worker(component: str) -> str:
    """The process that consumes a component's queue (its web process serves HTTP only)."""
    return f"{component}{WORKER_SUFFIX}"


def accepted(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.order(body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def depth(own: OwnStack, queue: str) -> int:
    return queue_depths(own.settings.amqp_url, own.topology)[queue]


def purge(own: OwnStack, queue: str) -> None:
    """Lose every message waiting in a queue, as a broker that lost its data would."""
    connection = connect(own.settings.amqp_url)
    try:
        connection.channel().queue_purge(queue)
    finally:
        connection.close()


def balance(own: OwnStack, user: int) -> int:
    return int(own.api.wallet(user)["balance_cents"])


def resent(own: OwnStack, gtid: str) -> int:
    """Events the coordinator sent again for this transaction."""
    row = own.dbs["coordinator"].fetch_one(
        "SELECT count(*) AS n FROM outbox WHERE routing_key = :key AND payload->>'gtid' = :g",
        key=branch_key(PLACED, PARTICIPANT),
        g=gtid,
    )
    return int(row["n"]) if row else 0


def test_an_event_lost_on_its_way_to_a_participant_is_sent_again(own):
    user = 11
    own.stack.kill(worker(PARTICIPANT), restart=False)
    order = accepted(own.api, msg_order(user, 1, red_packet_cents=70))
    queue = own.queue(PARTICIPANT)
    wait_until(lambda: depth(own, queue) == 1, what="the event waiting for the participant")
    purge(own, queue)
    own.stack.restart(worker(PARTICIPANT))

    settled = own.api.settled(order["order_id"], timeout_s=RESEND_S * 4)

    assert (settled["status"], settled["reason"]) == ("confirmed", None)
    assert balance(own, user) == 100000 - 70
    assert resent(own, order["gtid"]) >= 1


def test_a_settlement_lost_on_its_way_to_the_order_is_asked_for(own):
    user = 12
    own.stack.kill(worker(PARTICIPANT), restart=False)
    order = accepted(own.api, msg_order(user, 2, red_packet_cents=80))
    wait_until(lambda: depth(own, own.queue(PARTICIPANT)) == 1, what="the event in the queue")
    own.stack.kill(worker("order"), restart=False)
    own.stack.restart(worker(PARTICIPANT))
    settlements = own.queue("order")
    wait_until(lambda: depth(own, settlements) == 1, timeout_s=30, what="the settlement")
    purge(own, settlements)
    own.stack.restart(worker("order"))

    settled = own.api.settled(order["order_id"], timeout_s=60)

    assert (settled["status"], settled["reason"]) == ("confirmed", None)
    assert balance(own, user) == 100000 - 80


def test_a_begin_lost_on_its_way_to_the_coordinator_is_sent_again_by_the_order(own):
    user = 13
    own.stack.kill(worker("coordinator"), restart=False)
    order = accepted(own.api, msg_order(user, 3, red_packet_cents=90))
    reports = own.topology.queue(REPORTS_QUEUE).name
    wait_until(lambda: depth(own, reports) == 3, timeout_s=30, what="the begin and two reports")
    purge(own, reports)
    own.stack.restart(worker("coordinator"))

    settled = own.api.settled(order["order_id"], timeout_s=RESEND_S * 4)

    assert (settled["status"], settled["reason"]) == ("confirmed", None)
    assert balance(own, user) == 100000 - 90, "the copies sent again applied nothing twice"
    begins = own.dbs["order"].fetch_one(
        "SELECT count(*) AS n FROM outbox WHERE routing_key = :key AND payload->>'gtid' = :g",
        key=BEGUN,
        g=order["gtid"],
    )
    assert begins == {"n": 2}, "sent once with the order, once more by the reconciler"


def test_the_broker_stopped_mid_flow_loses_nothing(own):
    users = (14, 15)
    first = [accepted(own.api, msg_order(u, 4, red_packet_cents=50)) for u in users]
    assert own.broker.ctl("stop_app").returncode == 0
    try:
        # Accepted while the broker is down: the outbox keeps the events.
        while_down = accepted(own.api, msg_order(users[0], 5, red_packet_cents=25))
    finally:
        assert own.broker.ctl("start_app", timeout=120).returncode == 0
    for order in [*first, while_down]:
        assert own.api.settled(order["order_id"], timeout_s=90)["status"] == "confirmed"
    assert balance(own, users[0]) == 100000 - 50 - 25
    assert balance(own, users[1]) == 100000 - 50


class Load:
    """msg orders from two threads at about ORDERS_PER_S in all, until stopped."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.api_url = api.base_url
        self.stop = threading.Event()
        self.answers: list[tuple[float, int, str | None]] = []  # (when, status, order id)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._place, args=(n,)) for n in range(2)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _place(self, worker: int) -> None:
        session = requests.Session()
        for n in range(100_000):
            if self.stop.wait(2 / ORDERS_PER_S):  # the pace of the load, not a wait for news
                return
            user, sku = 100 + (n * 2 + worker) % 400, 1 + n % 50
            response = session.post(
                f"{self.api_url}/api/orders",
                json=msg_order(user, sku),
                headers=self.api.as_user(user),
                timeout=30,
            )
            order_id = response.json().get("order_id") if response.status_code == 202 else None
            with self.lock:
                self.answers.append((time.monotonic(), response.status_code, order_id))

    def accepted_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for at, status, _ in self.answers if at >= moment and status == 202)

    def order_ids(self) -> list[str]:
        with self.lock:
            return [order_id for _, _, order_id in self.answers if order_id]

    def statuses(self) -> set[int]:
        with self.lock:
            return {status for _, status, _ in self.answers}


def order_statuses(own: OwnStack, ids: list[str]) -> dict[str, int]:
    rows = own.dbs["order"].fetch_all(
        "SELECT status, count(*) AS n FROM orders WHERE order_id = ANY(:ids) GROUP BY status",
        ids=ids,
    )
    return {r["status"]: int(r["n"]) for r in rows}


def test_a_participant_database_down_under_load_only_delays_the_orders(own):
    assert OUTAGE_S > OLD_DEAD_LETTER_AFTER_S, "the outage must outlast the old retry window"
    with Load(own.api) as load:
        wait_until(lambda: load.accepted_since(0) >= 10, timeout_s=30, what="load flowing")
        stop_cluster(own.cluster, name=PARTICIPANT)
        down_at = time.monotonic()
        try:
            wait_until(
                lambda: time.monotonic() - down_at >= OUTAGE_S and load.accepted_since(down_at),
                timeout_s=OUTAGE_S + 30,
                interval_s=1.0,
                what=f"{OUTAGE_S:.0f}s of outage with orders still accepted",
            )
        finally:
            ensure_cluster(own.cluster, name=PARTICIPANT)
        back_at = time.monotonic()
        wait_until(lambda: load.accepted_since(back_at) >= 10, timeout_s=30, what="more load")
    ids = load.order_ids()
    assert load.statuses() == {202}

    wait_until(
        lambda: order_statuses(own, ids).get("pending", 0) == 0,
        timeout_s=300,
        interval_s=1.0,
        what=f"all {len(ids)} orders to settle",
    )
    assert order_statuses(own, ids) == {"confirmed": len(ids)}
    audit = wait_until(lambda: clean_audit(own), timeout_s=60, what="a clean audit")
    assert audit["checked"]["orders"] >= len(ids)
    letters = wait_until(lambda: every_answer(own), timeout_s=30, what="every consumer answering")
    assert (letters["items"], letters["total"]) == ([], 0)
    wait_until(
        lambda: not any(queue_depths(own.settings.amqp_url, own.topology).values()),
        timeout_s=60,
        what="every queue and retry tier drained",
    )
    spent = own.dbs[PARTICIPANT].fetch_one("SELECT sum(spent_cents) AS n FROM wallets")
    paid = own.dbs["order"].fetch_one(
        "SELECT sum(red_packet_cents) AS n FROM orders WHERE status = 'confirmed'"
    )
    assert spent == paid


def every_answer(own: OwnStack) -> dict[str, Any] | None:
    """Everyone's dead letters, once no consumer is missing from the answer (a pooled
    connection from before the outage may fail a first request)."""
    letters = dict(own.api.get("/admin/dead-letters", headers=ADMIN).json())
    return letters if not letters["unavailable"] else None


def clean_audit(own: OwnStack) -> dict[str, Any] | None:
    audit = own.api.audit()
    return audit if audit["ok"] else None
