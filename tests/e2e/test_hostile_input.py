"""Hostile input gets a 4xx in the contract's shape and records nothing: at the gateway
(public and admin routes) and at each service's own routes, called directly.

The input classes: NUL, an encoded UTF-16 surrogate (invalid UTF-8), Unicode digits and a
trailing newline in path segments and `limit`; nesting past any sane depth, unpaired
surrogates and NULs in JSON strings and field names; a malformed host in `notify_url`; an
order for a user that does not exist. (What gunicorn itself refuses is in
test_server_rejections.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from paxkit.config import stack_config
from paxkit.db import Database
from paxkit.threepc import OPS as THREEPC_OPS
from tests.e2e.conftest import ADMIN, SERVICE
from tests.helpers import as_user

PARTICIPANTS = stack_config().participants

GTID = "gtx-hostile-1"
RULE = {"route": "/api/orders", "rate_per_s": 1, "burst": 1}
BRANCH = {
    "gtid": GTID,
    "payload": {"order_id": "ord-hostile", "gtid": GTID, "items": [{"sku": "SKU-0001", "qty": 1}]},
}
PROTOCOL_OPS = ("tcc/try", "tcc/confirm", "tcc/cancel", "saga/action", "saga/compensate")

SEGMENTS = {
    "nul": "a%00b",
    "nul-alone": "%00",
    "encoded-surrogate": "%ED%A0%80",
    "superscript-two": "%C2%B2",
    "circled-one": "%E2%91%A0",
    "arabic-indic-three": "%D9%A3",
    "fullwidth-seven": "%EF%BC%97",
    "trailing-newline": "1%0A",
}
# (component, method, path with {} for the segment, body)
SEGMENT_ROUTES: list[tuple[str, str, str, Any]] = [
    ("gateway", "GET", "/api/products/{}", None),
    ("gateway", "GET", "/api/users/{}/wallet", None),
    ("gateway", "GET", "/api/users/{}/coupons", None),
    ("gateway", "GET", "/api/users/{}/orders", None),
    ("gateway", "GET", "/api/orders/{}", None),
    ("gateway", "GET", "/admin/transactions/{}", None),
    ("gateway", "PUT", "/admin/switches/{}", {"on": True}),
    ("gateway", "DELETE", "/admin/switches/{}", None),
    ("gateway", "PUT", "/admin/ratelimits/{}", RULE),
    ("gateway", "DELETE", "/admin/ratelimits/{}", None),
    ("inventory", "GET", "/products/{}", None),
    ("coupon", "GET", "/users/{}/coupons", None),
    ("coupon", "GET", "/coupons/{}", None),
    ("redpacket", "GET", "/users/{}/wallet", None),
    ("order", "GET", "/orders/{}", None),
    ("order", "GET", "/users/{}/orders", None),
    ("coordinator", "GET", "/transactions/{}", None),
    ("coordinator", "GET", "/admin/transactions/{}", None),
    ("coordinator", "POST", "/transactions/{}/resolve", {}),
    *((name, "POST", "/tcc/{}", BRANCH) for name in PARTICIPANTS),
    *((name, "POST", "/saga/{}", BRANCH) for name in PARTICIPANTS),
]

LIMITS = {name: SEGMENTS[name] for name in SEGMENTS if name != "nul-alone"}
LIMIT_ROUTES = [
    ("gateway", "/api/users/1/orders"),
    ("gateway", "/admin/changes"),
    ("gateway", "/admin/transactions"),
    ("inventory", "/products/top"),
    ("order", "/users/1/orders"),
    ("coordinator", "/admin/transactions"),
]


def nested_items(depth: int) -> bytes:
    return b'{"user_id": 1, "items": ' + b"[" * depth + b"]" * depth + b"}"


BODIES = {
    "deep-lists": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    "deep-under-a-field": nested_items(40),
    "surrogate-in-values": (
        b'{"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}], "coupon_id": "\\ud800", '
        b'"gtid": "\\udfff", "on": "\\ud800", "level": "\\udbff", "route": "\\ud800"}'
    ),
    "surrogate-in-a-field-name": b'{"\\ud800": 1, "user_id": 1}',
    "surrogate-as-raw-bytes": b'{"user_id": 1, "gtid": "\xed\xa0\x80"}',
    "nul-in-values": (
        b'{"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}], '
        b'"notify_url": "http://127.0.0.1/\\u0000", "gtid": "g\\u0000", "level": "\\u0000"}'
    ),
    "nul-in-a-field-name": b'{"user_id\\u0000": 1}',
}
JSON_ROUTES: list[tuple[str, str, str]] = [
    ("gateway", "POST", "/api/orders"),
    ("gateway", "PUT", "/admin/switches/read_only"),
    ("gateway", "PUT", "/admin/level"),
    ("gateway", "PUT", "/admin/ratelimits/hostile"),
    ("order", "POST", "/orders"),
    ("coordinator", "POST", "/transactions"),
    ("coordinator", "POST", f"/transactions/{GTID}/resolve"),
    *(
        (name, "POST", f"/xa/{op}")
        for name in PARTICIPANTS
        for op in ("prepare", "commit", "rollback")
    ),
    *((name, "POST", f"/{op}") for name in PARTICIPANTS for op in PROTOCOL_OPS),
    *((name, "POST", f"/3pc/{op}") for name in PARTICIPANTS for op in THREEPC_OPS),
]

NOTIFY_URLS = [
    "http://[::1/x",
    "http://[::1",
    "http://[127.0.0.1]/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:%C2%B2/",
    "http://127.0.0.1:\u00b2/",
    "http://127.0.0.1/\n",
]
ORDER_ROUTES = [("gateway", "/api/orders"), ("order", "/orders")]


def send(stack, component: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    # The stack's own credentials (user 1's token on the user routes, which take nothing
    # else): what is tested is each component's input handling.
    bearer = as_user(1) if path.startswith("/api/") else ADMIN
    headers = {**bearer, **SERVICE, **kwargs.pop("headers", {})}
    return requests.request(
        method, stack.url(component) + path, headers=headers, timeout=30, **kwargs
    )


def assert_refused(response: requests.Response, statuses: tuple[int, ...] = (400, 404)) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    return dict(error)


def recorded(dbs: dict[str, Database]) -> dict[str, int]:
    """Rows anything hostile could have left: orders, transactions, admin changes."""
    counts = {}
    for name, table in (("order", "orders"), ("coordinator", "global_txns")):
        row = dbs[name].fetch_one(f"SELECT count(*) AS n FROM {table}")
        counts[table] = int(row["n"]) if row else -1
    row = dbs["gateway"].fetch_one("SELECT count(*) AS n FROM control_changes")
    counts["control_changes"] = int(row["n"]) if row else -1
    return counts


@pytest.fixture
def nothing_recorded(dbs):
    before = recorded(dbs)
    yield
    assert recorded(dbs) == before


@pytest.mark.usefixtures("nothing_recorded")
@pytest.mark.parametrize("segment", SEGMENTS.values(), ids=list(SEGMENTS))
@pytest.mark.parametrize(
    ("component", "method", "template", "body"),
    SEGMENT_ROUTES,
    ids=[f"{c}:{m}:{t}" for c, m, t, _ in SEGMENT_ROUTES],
)
def test_hostile_path_segments_are_400_or_404(stack, component, method, template, body, segment):
    assert_refused(send(stack, component, method, template.format(segment), json=body))


@pytest.mark.parametrize("limit", LIMITS.values(), ids=list(LIMITS))
@pytest.mark.parametrize(
    ("component", "path"), LIMIT_ROUTES, ids=[f"{c}:{p}" for c, p in LIMIT_ROUTES]
)
def test_limit_takes_ascii_digits_only(stack, component, path, limit):
    error = assert_refused(send(stack, component, "GET", f"{path}?limit={limit}"), (400,))
    assert error["field"] == "limit"


@pytest.mark.usefixtures("nothing_recorded")
@pytest.mark.parametrize("body", BODIES.values(), ids=list(BODIES))
@pytest.mark.parametrize(
    ("component", "method", "path"), JSON_ROUTES, ids=[f"{c}:{m}:{p}" for c, m, p in JSON_ROUTES]
)
def test_hostile_json_is_400_invalid_json(stack, component, method, path, body):
    headers = {"Content-Type": "application/json"}
    error = assert_refused(send(stack, component, method, path, data=body, headers=headers), (400,))
    assert (error["code"], error["field"]) == ("invalid_json", "body")


@pytest.mark.usefixtures("nothing_recorded")
@pytest.mark.parametrize("url", NOTIFY_URLS)
@pytest.mark.parametrize(("component", "path"), ORDER_ROUTES)
def test_a_malformed_notify_url_names_the_field(stack, component, path, url):
    body = {"user_id": 1, "items": [{"sku": "SKU-0001", "qty": 1}], "notify_url": url}
    error = assert_refused(send(stack, component, "POST", path, json=body), (400,))
    assert error["field"] == "notify_url"


UNKNOWN_USERS = [
    {"user_id": 1001},
    {"user_id": 2**31 - 1, "mode": "tcc"},
    {"user_id": 5000, "mode": "saga", "coupon_id": "C-5000-1"},
    {"user_id": 5000, "mode": "msg", "red_packet_cents": 10},
    {"user_id": 5000, "items": [{"sku": "SKU-9999", "qty": 1}]},  # else a failed order
    {"user_id": 5000, "notify_url": "http://127.0.0.1:9/cb"},
]


@pytest.mark.usefixtures("nothing_recorded")
@pytest.mark.parametrize("order", UNKNOWN_USERS, ids=lambda o: f"{o['user_id']}-{o.get('mode')}")
@pytest.mark.parametrize(("component", "path"), ORDER_ROUTES)
def test_an_order_for_an_unknown_user_is_400_and_not_an_order(stack, component, path, order):
    stock_before = send(stack, "inventory", "GET", "/products/SKU-0001").json()["stock"]
    body = {"items": [{"sku": "SKU-0001", "qty": 1}], **order}
    # A token of the user itself (signed with the stack's key: no login knows that user),
    # so what is tested is the order service's check, behind the gateway's.
    signed = as_user(order["user_id"])
    error = assert_refused(send(stack, component, "POST", path, json=body, headers=signed), (400,))
    assert (error["code"], error["field"]) == ("unknown_user", "user_id")
    orders = send(stack, "order", "GET", f"/users/{order['user_id']}/orders").json()
    assert orders == {"items": []}
    assert send(stack, "inventory", "GET", "/products/SKU-0001").json()["stock"] == stock_before
