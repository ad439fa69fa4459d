"""The order service's copy of catalog prices: one lookup per miss, expiry, unknown SKUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from paxkit.errors import UpstreamUnavailable
from services.order.catalog import PriceBook

CATALOG = {"SKU-0001": 100, "SKU-0002": 200, "SKU-0003": 300}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass
class FakeInventory:
    """Answers GET /products?sku=... from CATALOG, recording every call."""

    calls: list[list[str]] = field(default_factory=list)
    down: bool = False

    def get(self, path: str, params: dict[str, list[str]]) -> Reply:
        assert path == "/products"
        self.calls.append(list(params["sku"]))
        if self.down:
            return Reply(503, {"error": {"code": "upstream_unavailable"}})
        items = [{"sku": s, "price_cents": CATALOG[s]} for s in params["sku"] if s in CATALOG]
        return Reply(200, {"items": items})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts() -> tuple[PriceBook, FakeInventory, Clock]:
    inventory, clock = FakeInventory(), Clock()
    book = PriceBook(inventory, ttl_s=60, unknown_ttl_s=5, clock=clock)  # type: ignore[arg-type]
    return book, inventory, clock


def test_the_missing_skus_of_an_order_are_fetched_in_one_call_then_held(parts):
    book, inventory, _ = parts
    assert book.prices(["SKU-0001", "SKU-0002"]) == {"SKU-0001": 100, "SKU-0002": 200}
    assert book.prices(["SKU-0002", "SKU-0001"]) == {"SKU-0001": 100, "SKU-0002": 200}
    assert book.prices(["SKU-0001", "SKU-0003"]) == {"SKU-0001": 100, "SKU-0003": 300}
    assert inventory.calls == [["SKU-0001", "SKU-0002"], ["SKU-0003"]]


def test_a_copy_is_fetched_again_once_it_expires(parts):
    book, inventory, clock = parts
    book.prices(["SKU-0001"])
    clock.now += 59
    book.prices(["SKU-0001"])
    clock.now += 2
    book.prices(["SKU-0001"])
    assert inventory.calls == [["SKU-0001"], ["SKU-0001"]]


def test_an_unknown_sku_is_remembered_briefly(parts):
    book, inventory, clock = parts
    for _ in range(3):
        assert book.prices(["SKU-9999"]) == {}
    clock.now += 6
    assert book.prices(["SKU-9999"]) == {}
    assert inventory.calls == [["SKU-9999"], ["SKU-9999"]]


def test_an_unreachable_inventory_on_a_miss_is_a_503_and_nothing_is_cached(parts):
    book, inventory, _ = parts
    inventory.down = True
    with pytest.raises(UpstreamUnavailable):
        book.prices(["SKU-0001"])
    inventory.down = False
    assert book.prices(["SKU-0001"]) == {"SKU-0001": 100}
    assert len(inventory.calls) == 2
