"""Order placement rules, free of I/O: request validation and pricing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from paxkit.errors import InvalidInput
from paxkit.validation import ID_PATTERN, validate_positive_int, validate_sku

# `naive` is the unsafe no-protocol baseline, and `3pc` unsafe under partition: each is
# accepted only where the stack enables it.
MODES = ("2pc", "tcc", "saga", "msg", "naive", "3pc", "paxos")
MAX_ITEMS = 50
MAX_QTY = 1000
MAX_CENTS = 10**12
MAX_URL_LENGTH = 2048
ALLOWED_FIELDS = {"user_id", "items", "coupon_id", "red_packet_cents", "mode", "notify_url"}
COUPON_PATTERN = ID_PATTERN
_URL_CHARS = re.compile(r"^[!-~]+\Z")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]+\Z|^\[[0-9A-Fa-f:]+\]\Z")


@dataclass(frozen=True)
class OrderLine:
    sku: str
    qty: int


@dataclass(frozen=True)
class OrderRequest:
    user_id: int
    items: tuple[OrderLine, ...]
    coupon_id: str | None
    red_packet_cents: int
    mode: str
    notify_url: str | None


@dataclass(frozen=True)
class CouponTerms:
    coupon_id: str
    user_id: int
    discount_cents: int
    min_spend_cents: int
    status: str


@dataclass(frozen=True)
class PricedLine:
    sku: str
    qty: int
    price_cents: int


@dataclass(frozen=True)
class Pricing:
    lines: tuple[PricedLine, ...]
    total_cents: int
    discount_cents: int
    red_packet_cents: int
    payable_cents: int


class PricingRejected(Exception):
    """A business rule rejects the order before any transaction starts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_order_request(body: Mapping[str, Any]) -> OrderRequest:
    """Validate a POST /api/orders body; the first problem found names its field."""
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field {unknown[0]!r}")
    if "user_id" not in body:
        raise InvalidInput("user_id", "user_id is required")
    return OrderRequest(
        user_id=validate_positive_int(body["user_id"], "user_id"),
        items=_parse_items(body.get("items")),
        coupon_id=_parse_coupon_id(body.get("coupon_id")),
        red_packet_cents=_parse_cents(body.get("red_packet_cents", 0), "red_packet_cents"),
        mode=_parse_mode(body.get("mode", "2pc")),
        notify_url=_parse_notify_url(body.get("notify_url")),
    )


def validate_order_id(raw: str | None, field: str) -> str | None:
    """An order id assigned by the caller, or None when it gave none."""
    if raw is None:
        return None
    if not ID_PATTERN.match(raw):
        raise InvalidInput(field, f"{field} must be 1-64 characters of [A-Za-z0-9_-]")
    return raw


def _parse_items(raw: Any) -> tuple[OrderLine, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("items", "items must be a non-empty list")
    if len(raw) > MAX_ITEMS:
        raise InvalidInput("items", f"at most {MAX_ITEMS} items per order")
    lines: list[OrderLine] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        field = f"items[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(field, "each item must be an object with sku and qty")
        extra = sorted(set(item) - {"sku", "qty"})
        if extra:
            raise InvalidInput(f"{field}.{extra[0]}", f"unknown field {extra[0]!r}")
        sku = validate_sku(item.get("sku"), f"{field}.sku")
        if sku in seen:
            raise InvalidInput(
                f"{field}.sku", f"{sku} appears twice; give it once with the total qty"
            )
        seen.add(sku)
        lines.append(
            OrderLine(sku, validate_positive_int(item.get("qty"), f"{field}.qty", MAX_QTY))
        )
    return tuple(lines)


def _parse_coupon_id(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not COUPON_PATTERN.match(raw):
        raise InvalidInput("coupon_id", "coupon_id must be null or a coupon id such as 'C-7-1'")
    return raw


def _parse_cents(raw: Any, field: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_CENTS:
        raise InvalidInput(
            field, f"{field} must be an integer number of cents from 0 to {MAX_CENTS}"
        )
    return raw


def _parse_mode(raw: Any) -> str:
    if raw not in MODES:
        raise InvalidInput("mode", f"mode must be one of {', '.join(MODES)}", code="invalid_mode")
    return str(raw)


def _parse_notify_url(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_URL_LENGTH:
        raise InvalidInput("notify_url", "notify_url must be an http(s) URL")
    if not _URL_CHARS.match(raw):
        raise InvalidInput("notify_url", "notify_url must be printable ASCII without spaces")
    try:  # urlsplit and its accessors raise on a malformed IPv6 host or port
        parts = urlsplit(raw)
        hostname, _ = parts.hostname, parts.port
    except ValueError as err:
        raise InvalidInput("notify_url", f"notify_url is not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidInput("notify_url", "notify_url must be an http(s) URL")
    if not _HOSTNAME.match(parts.netloc.rsplit("@", 1)[-1].rsplit(":", 1)[0] or "-"):
        raise InvalidInput("notify_url", "notify_url has an invalid host")
    return raw


def price_order(
    request: OrderRequest,
    prices: Mapping[str, int],
    coupon: CouponTerms | None,
) -> Pricing:
    """total = sum(price*qty); the coupon applies only when total >= its min spend (below
    it the discount is 0 and the coupon is left unused); payable = total - discount - red
    packet, never negative. A coupon that is not the user's or not available rejects.
    Stock is the inventory branch's to check, inside the transaction."""
    lines = []
    for line in request.items:
        if line.sku not in prices:
            raise PricingRejected("unknown_sku", f"No product with SKU {line.sku!r}.")
        lines.append(PricedLine(line.sku, line.qty, prices[line.sku]))
    total = sum(line.price_cents * line.qty for line in lines)
    discount = _coupon_discount(request, coupon, total)
    payable = total - discount - request.red_packet_cents
    if payable < 0:
        raise InvalidInput(
            "red_packet_cents",
            f"red_packet_cents ({request.red_packet_cents}) exceeds the amount left to pay "
            f"({total - discount})",
        )
    return Pricing(tuple(lines), total, discount, request.red_packet_cents, payable)


def _coupon_discount(request: OrderRequest, coupon: CouponTerms | None, total: int) -> int:
    if request.coupon_id is None:
        return 0
    if coupon is None or coupon.user_id != request.user_id:
        raise PricingRejected("coupon_unavailable", f"Coupon {request.coupon_id} is not yours.")
    if coupon.status != "available":
        raise PricingRejected(
            "coupon_unavailable", f"Coupon {request.coupon_id} is {coupon.status}."
        )
    if total < coupon.min_spend_cents:
        return 0  # below its minimum spend the coupon does not apply, and stays unused
    return min(coupon.discount_cents, total)
