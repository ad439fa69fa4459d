"""Two of everything: a stack at scale 2 (two web and two worker processes of every
component, two coordinators among them, HAProxy on the public ports) keeps every order
whole while one instance of each component in turn is SIGKILLed.

The stack is one of this module's own (own ports, databases, Redis db, broker namespace,
on quorum queues). The tests show that both gateways follow one control plane, that a
transaction a killed coordinator left mid-commit is finished by the other coordinator's
recovery, and that orders in every mode placed while an instance dies are confirmed, or
fail cleanly, with the audit of the databases clean afterwards. The kill-one-instance
results table is written to test-results/scale-kill-one-instance.md and printed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests

from infra.launcher import WORKER_SUFFIX, Stack
from paxkit.config import REPO_ROOT, Settings
from paxkit.db import Database
from paxkit.faults import arm, disarm_all
from paxkit.messaging import Topology, delete_topology
from tests.conftest import SLOT, TEST_ENV, database_handles
from tests.e2e.conftest import ADMIN, Api, own_stack, stack_ports
from tests.helpers import wait_until

PREFIX = f"paxmart_test{SLOT or ''}_scale_"
SCALE = 2
# Public ports at base+20 (gateway) and base+30..34; instance i at public + 25 * i, so
# everything stays within the slot's base+20..99.
PORT_OFFSET = 20
PORT_STEP = 25
MODES = ("2pc", "tcc", "saga", "msg")
KILLED_IN_TURN = ("gateway", "order", "coordinator", "inventory", "coupon", "redpacket")
LOAD_THREADS = 2
# Orders answered before the kill (the load running on both instances), and after the
# first one the other instance served (the load carried by it alone).
BEFORE_KILL_ORDERS = 20
AFTER_KILL_ORDERS = 60
# SKU-0020..0039 (2000..3900 cents, 1000 in stock each), one per order in turn: above
# coupon C-<user>-1's minimum spend, and stock for every order the module places.
SKUS = tuple(f"SKU-{n:04d}" for n in range(20, 40))
RESULTS = REPO_ROOT / "test-results" / "scale-kill-one-instance.md"


def scale_env() -> dict[str, str]:
    return {
        **TEST_ENV,
        **stack_ports(PORT_OFFSET),
        "PAXMART_DB_PREFIX": PREFIX,
        "PAXMART_MQ_NAMESPACE": f"{PREFIX}quorum",  # a queue's type can't change: in the name
        "PAXMART_AMQP_QUEUE_TYPE": "quorum",
        "PAXMART_AMQP_DELIVERY_LIMIT": "10",
        "PAXMART_REDIS_URL": f"redis://127.0.0.1:6379/{11 - SLOT}",
        "PAXMART_SCALE_PORT_STEP": str(PORT_STEP),
    }


@dataclass
class Scaled:
    stack: Stack
    api: Api
    settings: Settings
    dbs: dict[str, Database]
    faults: redis.Redis
    users: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    recovery_s: float | None = None


@pytest.fixture(scope="module")
def scaled(fresh_databases: Settings) -> Iterator[Scaled]:
    log_dir = fresh_databases.state_dir / "test-scale" / "logs"
    with (
        own_stack(scale_env(), log_dir, scale=SCALE) as (stack, settings),
        database_handles(settings, ("coordinator", "order")) as dbs,
    ):
        faults = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        try:
            yield Scaled(stack, Api(stack.url("gateway")), settings, dbs, faults)
        finally:
            disarm_all(faults)
    # own_stack dropped the queues; the namespace's exchange goes too (it names the type).
    delete_topology(settings.amqp_url, Topology.of(settings), exchange=True)


def order_body(user: int, mode: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "items": [{"sku": SKUS[user % len(SKUS)], "qty": 1}],
        "coupon_id": f"C-{user}-1",
        "red_packet_cents": 100,
        "mode": mode,
    }


def instance_number(stack: Stack, component: str, what: str) -> int:
    """Which of the component's web instances logged `what` (exactly one of them)."""
    found = [
        n
        for n, name in enumerate(stack.instances(component), 1)
        if what in stack.log_file(name).read_text(errors="replace")
    ]
    assert len(found) == 1, f"{what!r} logged by instances {found}"
    return found[0]


def kill_instance(stack: Stack, component: str, n: int) -> list[str]:
    """SIGKILL instance n of the component: its web process group and its worker's."""
    names = [f"{component}-{n}", *(w for w in stack.workers_of(component) if w.endswith(f"-{n}"))]
    for name in names:
        assert stack.pid(name) is not None
        stack.kill(name, restart=False)
    return names


def bring_back(stack: Stack, names: list[str]) -> None:
    for name in names:
        stack.restart(name, timeout=60)


def test_every_component_runs_two_instances_each_on_its_own_port(scaled):
    stack = scaled.stack
    for component in KILLED_IN_TURN:
        instances = stack.instances(component)
        assert len(instances) == SCALE and len(stack.workers_of(component)) == SCALE
        ports = {stack.port(component), *(stack.port(i) for i in instances)}
        assert len(ports) == SCALE + 1
        for name in instances:
            reply = requests.get(f"{stack.url(name)}/healthz", timeout=5)
            assert reply.json() == {"status": "ok", "component": component}
    assert scaled.api.get("/healthz").status_code == 200
    assert "server gateway-2" in stack.balancer_config.read_text()


def test_a_switch_flipped_through_one_gateway_is_seen_by_the_other(scaled):
    first, second = (scaled.stack.url(name) for name in scaled.stack.instances("gateway"))

    def on_at(url: str) -> bool:
        body = requests.get(f"{url}/admin/switches", headers=ADMIN, timeout=5).json()
        return bool(body["switches"]["recommendations"]["on"])

    assert not on_at(second)
    put = requests.put(
        f"{first}/admin/switches/recommendations", json={"on": True}, headers=ADMIN, timeout=5
    )
    assert put.status_code == 200, put.text
    try:
        wait_until(lambda: on_at(second), timeout_s=10, what="the other gateway to follow")
        degraded = requests.get(f"{second}/api/recommendations", timeout=5)
        assert degraded.status_code == 200
    finally:
        requests.delete(f"{first}/admin/switches/recommendations", headers=ADMIN, timeout=5)
    wait_until(lambda: not on_at(second), timeout_s=10, what="the switch back off there")


def txn_status(db: Database, gtid: str) -> str | None:
    row = db.fetch_one("SELECT status FROM global_txns WHERE gtid = :g", g=gtid)
    return str(row["status"]) if row else None


def newest_committing(db: Database) -> str | None:
    row = db.fetch_one(
        "SELECT gtid FROM global_txns WHERE status = 'committing' ORDER BY created_at DESC LIMIT 1"
    )
    return str(row["gtid"]) if row else None


def test_a_transaction_left_mid_commit_by_a_killed_coordinator_is_finished_by_the_other(
    scaled,
):
    stack, coordinator = scaled.stack, scaled.dbs["coordinator"]
    user = next(scaled.users)
    arm(scaled.faults, "coordinator", "after_decision", "stall", seconds=60)
    with ThreadPoolExecutor(1) as pool:
        placing = pool.submit(place, scaled.api, user, "2pc")
        gtid = wait_until(lambda: newest_committing(coordinator), what="a txn mid-commit")
        # The instance stalled in the commit is the one that began it: kill it (web and
        # worker), so only the other coordinator's recovery can finish the transaction.
        began = instance_number(stack, "coordinator", "fault stall at coordinator.after_decision")
        killed = kill_instance(stack, "coordinator", began)
        killed_at = time.monotonic()
        wait_until(
            lambda: txn_status(coordinator, gtid) == "committed",
            timeout_s=60,
            interval_s=0.05,
            what=f"{gtid} finished by the other coordinator",
        )
        scaled.recovery_s = time.monotonic() - killed_at
        placing.result(timeout=60)  # answered, one way or another: the outcome is the log's
    other = 3 - began
    took_over = f"recovery takes over {gtid}"
    assert took_over in stack.log_file(f"coordinator{WORKER_SUFFIX}-{other}").read_text()
    [order] = scaled.api.get(f"/api/users/{user}/orders").json()["items"]
    assert scaled.api.settled(order["order_id"])["status"] == "confirmed"
    bring_back(stack, killed)


@dataclass
class Tally:
    """What the orders placed while one instance was killed came to, per mode."""

    tried: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # 201 or 202
    errors: Counter[str] = field(default_factory=Counter)  # anything else the client saw
    placed: dict[int, str] = field(default_factory=dict)  # user -> mode
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, user: int, mode: str, ok: bool) -> None:
        with self.lock:
            self.tried[mode] += 1
            self.placed[user] = mode
            (self.answered if ok else self.errors)[mode] += 1


def place(api: Api, user: int, mode: str) -> bool:
    try:
        reply = api.order(order_body(user, mode))
    except requests.RequestException:
        return False
    return reply.status_code in (201, 202)


def load(scaled: Scaled, tally: Tally, stop: threading.Event) -> None:
    modes = itertools.cycle(MODES)
    api = Api(scaled.api.base_url)  # a session of the thread's own
    while not stop.is_set():
        with tally.lock:
            user, mode = next(scaled.users), next(modes)
        assert user <= 1000, "the seed has 1000 users"
        tally.note(user, mode, place(api, user, mode))


def outcomes(api: Api, tally: Tally) -> dict[str, Counter[str]]:
    """Each mode's orders as they finally stand: confirmed, failed, or never placed."""
    final: dict[str, Counter[str]] = {mode: Counter() for mode in MODES}
    for user, mode in tally.placed.items():
        items = api.get(f"/api/users/{user}/orders").json()["items"]
        assert len(items) <= 1, f"user {user} has {len(items)} orders for one placement"
        status = api.settled(items[0]["order_id"], 90, user)["status"] if items else "not placed"
        final[mode][status] += 1
    return final


def wait_for_answers(tally: Tally, count: int, what: str) -> None:
    wait_until(
        lambda: sum(tally.answered.values()) >= count, timeout_s=60, interval_s=0.02, what=what
    )


def kill_one_instance_of(scaled: Scaled, component: str) -> tuple[Tally, float]:
    """Orders in every mode from LOAD_THREADS clients while instance 1 of the component is
    SIGKILLed; its processes come back afterwards. Returns the tally and how long after the
    kill the other instance served the first order."""
    tally, stop = Tally(), threading.Event()
    threads = [
        threading.Thread(target=load, args=(scaled, tally, stop)) for _ in range(LOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for_answers(tally, BEFORE_KILL_ORDERS, "orders answered before the kill")
        answered = sum(tally.answered.values())
        killed = kill_instance(scaled.stack, component, 1)
        killed_at = time.monotonic()
        wait_until(
            lambda: sum(tally.answered.values()) > answered + LOAD_THREADS,
            timeout_s=30,
            interval_s=0.02,
            what=f"orders answered with one {component} killed",
        )
        served_s = time.monotonic() - killed_at
        wait_for_answers(
            tally, sum(tally.answered.values()) + AFTER_KILL_ORDERS, f"orders with {component} down"
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    bring_back(scaled.stack, killed)
    return tally, served_s


def quiet(scaled: Scaled) -> None:
    """Nothing pending, prepared or unfinished in the stack's databases."""
    order, coordinator = scaled.dbs["order"], scaled.dbs["coordinator"]
    wait_until(
        lambda: (
            order.fetch_one("SELECT count(*) AS n FROM orders WHERE status = 'pending'") == {"n": 0}
        ),
        timeout_s=90,
        what="every order settled",
    )
    wait_until(
        lambda: (
            coordinator.fetch_one(
                "SELECT count(*) AS n FROM pg_prepared_xacts WHERE database LIKE :p", p=f"{PREFIX}%"
            )
            == {"n": 0}
        ),
        timeout_s=60,
        what="no prepared branch left",
    )
    wait_until(
        lambda: (
            coordinator.fetch_one(
                "SELECT count(*) AS n FROM global_txns WHERE status NOT IN ('committed', 'aborted')"
            )
            == {"n": 0}
        ),
        timeout_s=60,
        what="every transaction finished",
    )


def table(
    rows: list[tuple[str, Tally, float, dict[str, Counter[str]]]], recovery: float | None
) -> str:
    lines = [
        f"# Kill one instance (scale {SCALE}, {LOAD_THREADS} clients, quorum queues)",
        "",
        "| instance killed | mode | tried | answered 201/202 | client errors | confirmed "
        "| failed | not placed | next order served after (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for component, tally, served_s, final in rows:
        for mode in MODES:
            lines.append(
                f"| {component}-1 (web + worker) | {mode} | {tally.tried[mode]} "
                f"| {tally.answered[mode]} | {tally.errors[mode]} | {final[mode]['confirmed']} "
                f"| {final[mode]['failed']} | {final[mode]['not placed']} "
                f"| {served_s:.2f} |"
            )
    if recovery is not None:
        lines += [
            "",
            "A 2pc transaction left mid-commit (after the decision) by a SIGKILLed coordinator "
            f"was committed by the other coordinator's recovery {recovery:.1f} s after the kill "
            f"(transaction lease {TEST_ENV['PAXMART_TXN_TIMEOUT_S']} s, recovery every "
            f"{TEST_ENV['PAXMART_RECOVERY_INTERVAL_S']} s).",
        ]
    return "\n".join(lines) + "\n"


def test_killing_one_instance_of_each_component_loses_no_order(scaled):
    rows = []
    for component in KILLED_IN_TURN:
        tally, served_s = kill_one_instance_of(scaled, component)
        quiet(scaled)
        final = outcomes(scaled.api, tally)
        rows.append((component, tally, served_s, final))
    report = table(rows, scaled.recovery_s)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print("\n" + report)

    audit = scaled.api.audit()
    assert audit["ok"], audit["violations"]
    for component, tally, _, final in rows:
        for mode in MODES:
            # Served on by the other instance: orders in every mode went through.
            assert final[mode]["confirmed"] > 0, (component, mode, final)
            # Whatever the client was told, every order ended confirmed or failed: none
            # is left pending (quiet() waited for that) and none was double-placed.
            assert sum(final[mode].values()) == tally.tried[mode]
            # Every order the client was told of (201 confirmed, or 202) ended confirmed.
            assert final[mode]["confirmed"] >= tally.answered[mode], (component, mode, final)
        # Only orders caught in flight by the kill may have been lost to the client.
        assert sum(tally.errors.values()) <= 4 * LOAD_THREADS, (component, tally.errors)
