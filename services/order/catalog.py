"""The order service's copy of the catalog's prices, so that placing an order makes no
price-lookup call.

A SKU's price is fixed for the life of a catalog entry: a change of price is a new
version of the product, which new orders see once their copy of it expires (`ttl_s`).
A SKU the copy does not hold, or holds past its lifetime, is fetched from the inventory
service (all such SKUs of an order in one call); a SKU the inventory does not know is
remembered as unknown for `unknown_ttl_s`, so a stream of orders for made-up SKUs costs
one lookup each time that runs out, not one per order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from paxkit.errors import UpstreamUnavailable
from paxkit.http import ServiceClient

DEFAULT_TTL_S = 300.0
UNKNOWN_TTL_S = 5.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class PriceEntry:
    price_cents: int | None  # None: the inventory does not know the SKU
    expires_at: float


class PriceBook:
    """SKU -> price in cents, shared by the threads of one process."""

    def __init__(
        self,
        inventory: ServiceClient,
        ttl_s: float = DEFAULT_TTL_S,
        unknown_ttl_s: float = UNKNOWN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inventory = inventory
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.clock = clock
        self._entries: dict[str, PriceEntry] = {}
        self._lock = threading.Lock()

    def prices(self, skus: Iterable[str]) -> dict[str, int]:
        """The price of each known SKU among `skus` (an unknown one is left out)."""
        wanted = list(skus)
        now = self.clock()
        stale = [sku for sku in wanted if not self._fresh(sku, now)]
        if stale:
            self._fetch(stale, now)
        found = {sku: self._entries.get(sku) for sku in wanted}
        return {sku: e.price_cents for sku, e in found.items() if e and e.price_cents is not None}

    def _fresh(self, sku: str, now: float) -> bool:
        entry = self._entries.get(sku)
        return entry is not None and entry.expires_at > now

    def _fetch(self, skus: list[str], now: float) -> None:
        reply = self.inventory.get("/products", params={"sku": skus})
        if not reply.ok:
            raise UpstreamUnavailable("The inventory service could not look up prices.")
        known = {p["sku"]: int(p["price_cents"]) for p in reply.body["items"]}
        with self._lock:
            if len(self._entries) + len(skus) > MAX_ENTRIES:
                self._entries.clear()
            for sku in skus:
                price = known.get(sku)
                ttl = self.ttl_s if price is not None else self.unknown_ttl_s
                self._entries[sku] = PriceEntry(price, now + ttl)
