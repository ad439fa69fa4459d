"""Sample rows that tests and scenarios write straight into a service's database."""

from __future__ import annotations

from typing import Any


def pending_order(order_id: str, mode: str, gtid: str | None = None) -> dict[str, Any]:
    """A pending order of one item, as the order service stores it before its outcome."""
    return {
        "order_id": order_id,
        "gtid": gtid or f"gtx-{order_id}",
        "user_id": 4,
        "mode": mode,
        "txn_mode": mode,
        "status": "pending",
        "reason": None,
        "items": [{"sku": "SKU-0007", "qty": 1, "price_cents": 700}],
        "coupon_id": None,
        "total_cents": 700,
        "discount_cents": 0,
        "red_packet_cents": 0,
        "payable_cents": 700,
        "notify_url": None,
    }
