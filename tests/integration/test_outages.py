"""A dependency outage answers 503 with Retry-After in the contract's shape, on every route
of every component; a pooled connection the server dropped costs at most one such answer
and never poisons the requests after it.

Each component is its real app (create_app) in-process, its settings pointing at a port
where nothing listens; the pool tests run an inventory app on a scratch database of its
own and end its server connections with pg_terminate_backend.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import text

from coordinator.app import create_app as coordinator_app
from gateway.app import create_app as gateway_app
from paxkit.auth import SERVICE_HEADER
from paxkit.config import Settings
from paxkit.db import Database
from paxkit.faults import arm, disarm_all
from paxkit.participant import create_participant_app
from services.coupon.app import create_app as coupon_app
from services.inventory.app import SPEC as INVENTORY
from services.inventory.app import create_app as inventory_app
from services.order.app import create_app as order_app
from services.redpacket.app import create_app as redpacket_app
from tests.conftest import TEST_ENV
from tests.helpers import as_user, wait_until
from tests.integration.gateway_kit import ADMIN, free_port, isolated_options

ORDER = {"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}]}
_gtids = (f"gtx-outage-{n}" for n in itertools.count(1))


def branch_body(gtid: str = "gtx-outage-0") -> dict[str, Any]:
    payload = {"order_id": "ord-outage", "gtid": gtid, "items": [{"sku": "SKU-0001", "qty": 1}]}
    return {"gtid": gtid, "payload": {**payload, "user_id": 1, "amount_cents": 1}}


PROTOCOL_ROUTES = [
    ("POST", "/xa/prepare", branch_body()),
    ("POST", "/xa/commit", {"gtid": "gtx-outage-0"}),
    ("POST", "/xa/rollback", {"gtid": "gtx-outage-0"}),
    ("GET", "/xa/prepared", None),
]
AUDIT_ROUTES = [("GET", "/audit/leftovers", None)]
HOLDING_ROUTES = [
    *PROTOCOL_ROUTES,
    *AUDIT_ROUTES,
    ("GET", "/audit/ledger", None),
    *(("POST", f"/tcc/{op}", branch_body()) for op in ("try", "confirm", "cancel")),
    *(("POST", f"/saga/{op}", branch_body()) for op in ("action", "compensate")),
]
# Every route of each component that reads or writes its own database.
DATABASE_ROUTES: dict[str, tuple[Callable[[Settings], Flask], list[tuple[str, str, Any]]]] = {
    "inventory": (
        inventory_app,
        [
            ("GET", "/products", None),
            ("GET", "/products?sku=SKU-0001", None),
            ("GET", "/products/SKU-0001", None),
            ("GET", "/products/top", None),
            *HOLDING_ROUTES,
        ],
    ),
    "coupon": (
        coupon_app,
        [("GET", "/users/1/coupons", None), ("GET", "/coupons/C-1-1", None), *HOLDING_ROUTES],
    ),
    "redpacket": (redpacket_app, [("GET", "/users/1/wallet", None), *HOLDING_ROUTES]),
    "order": (
        order_app,
        [
            ("GET", "/orders/ord-1", None),
            ("GET", "/users/1/orders", None),
            ("GET", "/audit/orders", None),
            *AUDIT_ROUTES,
        ],
    ),
    "coordinator": (
        coordinator_app,
        [
            ("GET", "/transactions/gtx-outage-0", None),
            ("GET", "/admin/transactions", None),
            ("GET", "/admin/transactions/gtx-outage-0", None),
            ("POST", "/admin/recover", None),
            (
                "POST",
                "/transactions",
                {
                    "gtid": "gtx-outage-9",
                    "mode": "saga",
                    "branches": [{"name": "inventory", "payload": {}}],
                },
            ),
            ("POST", "/transactions/gtx-outage-0/resolve", {}),
        ],
    ),
}
GATEWAY_DATABASE_ROUTES = [
    ("PUT", "/admin/switches/read_only", {"on": True}),
    ("DELETE", "/admin/switches/read_only", None),
    ("PUT", "/admin/level", {"level": "warning"}),
    ("PUT", "/admin/ratelimits/r1", {"route": "/api/orders", "rate_per_s": 1, "burst": 1}),
    ("DELETE", "/admin/ratelimits/r1", None),
    ("GET", "/admin/changes", None),
]
GATEWAY_UPSTREAM_ROUTES = [
    ("GET", "/api/products", None),
    ("GET", "/api/products/SKU-0001", None),
    ("GET", "/api/users/1/wallet", None),
    ("GET", "/api/users/1/coupons", None),
    ("GET", "/api/users/1/orders", None),
    ("GET", "/api/orders/ord-1", None),
    ("POST", "/api/orders", ORDER),
    ("GET", "/admin/audit", None),
    ("GET", "/admin/transactions", None),
    ("GET", "/admin/transactions/gtx-outage-0", None),
]


@pytest.fixture(scope="module")
def nowhere(settings: Settings) -> Settings:
    """Every database, Redis, the broker and every component on a port nobody listens on."""
    port = free_port()
    return dataclasses.replace(
        settings,
        db_urls={name: f"postgresql://postgres@127.0.0.1:{port}/none" for name in settings.db_urls},
        urls={name: f"http://127.0.0.1:{port}" for name in settings.urls},
        redis_url=f"redis://127.0.0.1:{port}/0",
        amqp_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        faults_enabled=False,
    )


def assert_unavailable(response: Any, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert (error["code"], type(error["message"])) == (code, str), error
    assert int(response.headers["Retry-After"]) >= 1


def call(app: Flask, method: str, path: str, body: Any) -> Any:
    """As the stack calls it: with the admin token (a user's on the user routes, which
    take a user's token only) and the service credential."""
    bearer = as_user(1) if path.startswith("/api/") else ADMIN
    headers = {**bearer, SERVICE_HEADER: TEST_ENV["PAXMART_SERVICE_TOKEN"]}
    return app.test_client().open(path, method=method, json=body, headers=headers)


@pytest.fixture(scope="module")
def stranded(nowhere: Settings) -> dict[str, Flask]:
    """Each component's app, with nothing it depends on answering."""
    return {name: factory(nowhere) for name, (factory, _) in DATABASE_ROUTES.items()}


@pytest.mark.parametrize(
    ("component", "method", "path", "body"),
    [(name, *route) for name, (_, routes) in DATABASE_ROUTES.items() for route in routes],
)
def test_a_database_outage_is_503_on_every_route(stranded, component, method, path, body):
    assert_unavailable(call(stranded[component], method, path, body), "database_unavailable")


@pytest.fixture(scope="module")
def lonely_gateway(nowhere: Settings) -> Iterator[Flask]:
    app = gateway_app(nowhere, isolated_options())
    yield app
    app.extensions["paxmart.gateway"].stop()


@pytest.mark.parametrize(("method", "path", "body"), GATEWAY_DATABASE_ROUTES)
def test_the_gateway_control_store_outage_is_503(lonely_gateway, method, path, body):
    assert_unavailable(call(lonely_gateway, method, path, body), "database_unavailable")


@pytest.mark.parametrize(("method", "path", "body"), GATEWAY_UPSTREAM_ROUTES)
def test_upstreams_out_of_reach_are_503_at_the_gateway(lonely_gateway, method, path, body):
    assert_unavailable(call(lonely_gateway, method, path, body), "upstream_unavailable")


def test_an_order_whose_prices_cannot_be_read_is_503(stranded):
    assert_unavailable(call(stranded["order"], "POST", "/orders", ORDER), "upstream_unavailable")


def test_redis_down_under_fault_points_runs_the_action_once(
    settings: Settings, scratch_db: Callable[[str], Database], nowhere: Settings
):
    """A fault point whose arming can't be read doesn't fire: it must not be a fault of its own."""
    db = scratch_db("inventory")
    dead_redis = dataclasses.replace(settings, redis_url=nowhere.redis_url, faults_enabled=True)
    app = create_participant_app(INVENTORY, dead_redis, db=db)
    body = branch_body()
    first = call(app, "POST", "/tcc/try", body)
    assert (first.status_code, first.get_json()["effect"]) == (200, "applied"), first.get_data()
    again = call(app, "POST", "/tcc/try", body)
    assert (again.status_code, again.get_json()["effect"]) == (200, "duplicate"), again.get_data()
    assert db.fetch_one("SELECT count(*) AS n FROM barrier") == {"n": 1}


# ---------------------------------------------------------------- dropped pooled connections


@pytest.fixture
def pooled(settings: Settings, scratch_db: Callable[[str], Database]) -> tuple[Flask, Database]:
    """An inventory app alone on a scratch database, its pools warmed by one read."""
    db = scratch_db("inventory")
    app = create_participant_app(INVENTORY, settings, db=db)
    assert call(app, "GET", "/products/SKU-0001", None).status_code == 200
    return app, db


def drop_connections(dbs: dict[str, Database], victim: Database) -> int:
    """End every server session of the victim's database, as a Postgres restart would."""
    name = victim.engine.url.database
    with dbs["coordinator"].autocommit() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            ).all()
        )


def frozen(db: Database, sku: str = "SKU-0001") -> int:
    row = db.fetch_one("SELECT frozen FROM products WHERE sku = :sku", sku=sku)
    assert row is not None
    return int(row["frozen"])


def test_a_read_on_a_dropped_connection_reconnects_at_once(pooled, dbs):
    app, db = pooled
    assert drop_connections(dbs, db) >= 1
    response = call(app, "GET", "/products/SKU-0001", None)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["sku"] == "SKU-0001"


def test_a_write_on_a_dropped_connection_is_one_503_then_applies_once(pooled, dbs):
    app, db = pooled
    before = frozen(db)
    assert drop_connections(dbs, db) >= 1
    body = branch_body(next(_gtids))
    assert_unavailable(call(app, "POST", "/tcc/try", body), "database_unavailable")
    assert frozen(db) == before
    retried = call(app, "POST", "/tcc/try", body)
    assert retried.get_json() == {"ok": True, "effect": "applied", "reason": None}
    assert frozen(db) == before + 1


def test_a_connection_lost_inside_a_transaction_poisons_nothing(
    pooled, dbs, redis_client: redis.Redis
):
    """The prepare's transaction loses its connection mid-way (stalled at a fault point,
    its session ended): that request is a 503; the same prepare again votes yes."""
    app, db = pooled
    gtid = next(_gtids)
    arm(redis_client, "inventory", "before_prepare", "stall", seconds=3.0)
    try:
        with ThreadPoolExecutor(1) as pool:
            stalled = pool.submit(call, app, "POST", "/xa/prepare", branch_body(gtid))
            wait_until(
                lambda: in_transaction(dbs, db), 10, what="the prepare to hold its transaction"
            )
            assert drop_connections(dbs, db) >= 1
            assert_unavailable(stalled.result(timeout=30), "database_unavailable")
    finally:
        disarm_all(redis_client)
    assert db.fetch_all("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE :g", g=f"{gtid}%") == []
    again = call(app, "POST", "/xa/prepare", branch_body(gtid))
    assert again.get_json() == {"vote": "yes", "reason": None}
    assert call(app, "POST", "/xa/rollback", {"gtid": gtid}).get_json() == {"state": "rolled_back"}
    assert call(app, "GET", "/products/SKU-0001", None).status_code == 200


def in_transaction(dbs: dict[str, Database], victim: Database) -> bool:
    row = dbs["coordinator"].fetch_one(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = :name "
        "AND state = 'idle in transaction'",
        name=victim.engine.url.database,
    )
    return bool(row and row["n"])
