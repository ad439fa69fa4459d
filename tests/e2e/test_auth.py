"""End users are who they say they are: every user-scoped route needs the user's own token.

Each case of each route: no token (401 auth_required), a bad one (401 token_invalid), an
expired one (401 token_expired), another user's token or order body (403 forbidden), and
each time nothing is placed and nothing of the other user is revealed.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.identity import AUDIENCE, ISSUER
from infra.users import dev_password
from paxkit.tokens import TokenSigner
from tests.conftest import TEST_ENV
from tests.e2e.conftest import ADMIN, SERVICE, Api

KEY = TEST_ENV["PAXMART_AUTH_SIGNING_KEY"]


def signer(key: str = KEY, ttl_s: float = 900.0, clock_offset_s: float = 0.0) -> TokenSigner:
    return TokenSigner(
        key, ttl_s, issuer=ISSUER, audience=AUDIENCE, clock=lambda: time.time() + clock_offset_s
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expired_token(user: int) -> str:
    return signer(ttl_s=60, clock_offset_s=-3600).issue(str(user)).token


def unsigned_token(user: int) -> str:
    """`alg: none` with the right claims: a forgery that must never pass."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": str(user), "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


INVALID = {
    "garbage": lambda user: "not-a-token",
    "other-key": lambda user: (
        signer("another-key-entirely-0123456789abcdef").issue(str(user)).token
    ),
    "alg-none": unsigned_token,
    "not-a-user": lambda user: signer().issue("admin").token,
    "admin-token": lambda user: TEST_ENV["PAXMART_ADMIN_TOKEN"],
}


def order_body(user: int) -> dict[str, Any]:
    return {"user_id": user, "items": [{"sku": "SKU-0042", "qty": 1}], "red_packet_cents": 100}


def routes(user: int, order_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every user-scoped route, acting on `user`'s resources."""
    return [
        ("GET", f"/api/users/{user}/wallet", None),
        ("GET", f"/api/users/{user}/coupons", None),
        ("GET", f"/api/users/{user}/orders", None),
        ("GET", f"/api/orders/{order_id}", None),
        ("POST", "/api/orders", order_body(user)),
        ("POST", "/api/auth/refresh", None),
    ]


ROUTE_IDS = ["wallet", "coupons", "orders-list", "order", "place", "refresh"]


def raw(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
    """A request exactly as given: no automatic sign-in."""
    return requests.request(method, api.base_url + path, json=body, headers=headers, timeout=30)


class Footprint:
    """What a user has: orders, wallet, coupons, read with the user's own token."""

    def __init__(self, api: Api, user: int) -> None:
        self.api, self.user = api, user

    def now(self) -> tuple[Any, ...]:
        orders = self.api.get(f"/api/users/{self.user}/orders").json()["items"]
        return (
            len(orders),
            self.api.wallet(self.user),
            self.api.get(f"/api/users/{self.user}/coupons").json()["items"],
        )


@pytest.fixture
def placed(api: Api, user: int) -> str:
    response = api.order(order_body(user))
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def log_in(api: Api, user: int, password: str) -> requests.Response:
    return raw(api, "POST", "/api/auth/token", {"user_id": user, "password": password}, {})


def error_of(response: requests.Response) -> str:
    return str(response.json()["error"]["code"])


def test_a_user_logs_in_with_the_seeded_password_and_reads_its_own_wallet(api, user):
    login = raw(
        api, "POST", "/api/auth/token", {"user_id": user, "password": dev_password(user)}, {}
    )
    assert login.status_code == 200, login.text
    body = login.json()
    assert (body["token_type"], body["user_id"], body["expires_in"]) == ("Bearer", user, 900)
    assert body["expires_at"] == pytest.approx(time.time() + 900, abs=5)
    wallet = raw(api, "GET", f"/api/users/{user}/wallet", None, bearer(body["access_token"]))
    assert (wallet.status_code, wallet.json()["user_id"]) == (200, user)


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": 150, "password": "wrong"},
        {"user_id": 999999, "password": "paxmart-999999"},
        {"user_id": 151, "password": "paxmart-152"},
    ],
    ids=["wrong-password", "unknown-user", "someone-elses-password"],
)
def test_wrong_credentials_are_401_invalid_credentials_with_no_token(api, body):
    response = raw(api, "POST", "/api/auth/token", body, {})
    assert (response.status_code, error_of(response)) == (401, "invalid_credentials")
    assert "access_token" not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [({"user_id": "7", "password": "x"}, "user_id"), ({"user_id": 7}, "password")],
)
def test_a_malformed_login_is_400_naming_the_field(api, body, field):
    response = raw(api, "POST", "/api/auth/token", body, {})
    assert (response.status_code, response.json()["error"]["field"]) == (400, field)


def test_public_reads_need_no_token(api):
    for path in ("/api/products", "/api/products/SKU-0001", "/api/recommendations"):
        assert raw(api, "GET", path, None, {}).status_code == 200, path


@pytest.mark.parametrize("route", range(6), ids=ROUTE_IDS)
def test_no_token_is_401_auth_required_and_nothing_happens(api, user, placed, route):
    footprint = Footprint(api, user)
    before = footprint.now()
    method, path, body = routes(user, placed)[route]
    response = raw(api, method, path, body, {})
    assert (response.status_code, error_of(response)) == (401, "auth_required"), response.text
    assert str(user) not in response.text.replace(path, "")
    assert footprint.now() == before


@pytest.mark.parametrize("kind", sorted(INVALID))
@pytest.mark.parametrize("route", range(6), ids=ROUTE_IDS)
def test_an_invalid_token_is_401_token_invalid_and_nothing_happens(api, user, placed, route, kind):
    footprint = Footprint(api, user)
    before = footprint.now()
    method, path, body = routes(user, placed)[route]
    response = raw(api, method, path, body, bearer(INVALID[kind](user)))
    assert (response.status_code, error_of(response)) == (401, "token_invalid"), response.text
    assert footprint.now() == before


@pytest.mark.parametrize("route", range(6), ids=ROUTE_IDS)
def test_an_expired_token_is_401_token_expired_and_nothing_happens(api, user, placed, route):
    footprint = Footprint(api, user)
    before = footprint.now()
    method, path, body = routes(user, placed)[route]
    response = raw(api, method, path, body, bearer(expired_token(user)))
    assert (response.status_code, error_of(response)) == (401, "token_expired"), response.text
    assert footprint.now() == before


@pytest.mark.parametrize("route", range(5), ids=ROUTE_IDS[:5])
def test_another_users_token_is_403_and_reveals_nothing(api, user, another_user, placed, route):
    victim, before = Footprint(api, user), Footprint(api, user).now()
    intruder = Footprint(api, another_user)
    intruder_before = intruder.now()
    method, path, body = routes(user, placed)[route]
    response = raw(api, method, path, body, api.as_user(another_user))
    assert (response.status_code, error_of(response)) == (403, "forbidden"), response.text
    assert set(response.json()) == {"error"}
    for secret in ("balance_cents", "coupon_id", "order_id", placed):
        assert secret not in response.text
    assert victim.now() == before
    assert intruder.now() == intruder_before


def test_an_order_body_for_another_user_is_403_and_places_nothing(api, user, another_user):
    victim, intruder = Footprint(api, user), Footprint(api, another_user)
    before = (victim.now(), intruder.now())
    body = {**order_body(user), "coupon_id": f"C-{user}-1"}
    for key in (None, "steal-1"):
        headers = {**api.as_user(another_user), **({"Idempotency-Key": key} if key else {})}
        response = raw(api, "POST", "/api/orders", body, headers)
        assert (response.status_code, error_of(response)) == (403, "forbidden"), response.text
    assert (victim.now(), intruder.now()) == before


def test_a_token_refreshes_before_it_expires_and_then_only_a_login_helps(api, user):
    short = signer(ttl_s=60).issue(str(user)).token
    refreshed = raw(api, "POST", "/api/auth/refresh", None, bearer(short))
    assert refreshed.status_code == 200, refreshed.text
    fresh = refreshed.json()
    assert (fresh["user_id"], fresh["expires_in"]) == (user, 900) and fresh["access_token"] != short
    again = raw(api, "GET", f"/api/users/{user}/wallet", None, bearer(fresh["access_token"]))
    assert again.status_code == 200
    stale = raw(api, "POST", "/api/auth/refresh", None, bearer(expired_token(user)))
    assert (stale.status_code, error_of(stale)) == (401, "token_expired")


def test_brute_force_on_one_users_password_is_rate_limited(api, user):
    attempts = [log_in(api, user, f"guess-{n}") for n in range(12)]
    statuses = [r.status_code for r in attempts]
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429, statuses
    assert int(attempts[-1].headers["Retry-After"]) >= 1
    # The right password is refused too while the user's bucket is empty: no oracle.
    right = raw(
        api, "POST", "/api/auth/token", {"user_id": user, "password": dev_password(user)}, {}
    )
    assert right.status_code == 429


def test_tokens_passwords_and_the_admin_token_stay_out_of_logs_and_metrics(api, stack, user):
    wrong = f"not-the-password-{time.time_ns()}"
    log_in(api, user, wrong)
    login = raw(
        api, "POST", "/api/auth/token", {"user_id": user, "password": dev_password(user)}, {}
    )
    token = login.json()["access_token"]
    me = bearer(token)
    assert raw(api, "GET", f"/api/users/{user}/wallet", None, me).status_code == 200
    placed = raw(api, "POST", "/api/orders", order_body(user), me)
    assert placed.status_code == 201
    raw(api, "GET", f"/api/orders/{placed.json()['order_id']}", None, me)
    raw(api, "GET", f"/api/users/{user + 1}/wallet", None, me)  # a 403
    raw(api, "GET", f"/api/users/{user}/wallet", None, bearer(token + "x"))  # a 401
    assert raw(api, "GET", "/admin/audit", None, ADMIN).status_code in (200, 503)
    secrets = {
        "token": token,
        "token signature": token.rsplit(".", 1)[1],
        "password": dev_password(user),
        "wrong password": wrong,
        "admin token": TEST_ENV["PAXMART_ADMIN_TOKEN"],
        "signing key": KEY,
    }
    logs = sorted(Path(stack.log_file("gateway")).parent.rglob("*.log"))
    assert logs, "the stack writes component logs"
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts.update(
        {
            f"{name} /metrics": requests.get(stack.url(name) + "/metrics", timeout=10).text
            for name in ("gateway", "order")
        }
    )
    for where, text in texts.items():
        for what, value in secrets.items():
            assert value not in text, f"the {what} is in {where}"


def test_the_order_service_places_only_for_the_user_the_gateway_forwards(stack, api, user):
    """Behind the gateway too: with the service credential, a body for another user than
    X-Authenticated-User is refused, and nothing is placed."""
    footprint = Footprint(api, user)
    before = footprint.now()
    headers = {**SERVICE, "X-Order-Id": f"ord-forwarded-{user}", "X-Authenticated-User": "1"}
    response = requests.post(
        stack.url("order") + "/orders", json=order_body(user), headers=headers, timeout=30
    )
    assert (response.status_code, error_of(response)) == (403, "forbidden"), response.text
    assert footprint.now() == before


def test_the_credential_check_needs_the_service_credential(stack, user):
    body = {"user_id": user, "password": dev_password(user)}
    url = stack.url("order") + "/credentials/check"
    assert requests.post(url, json=body, timeout=10).status_code == 401
    checked = requests.post(url, json=body, headers=SERVICE, timeout=10)
    assert (checked.status_code, checked.json()) == (200, {"user_id": user})
