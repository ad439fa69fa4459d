"""The gateway's in-process cache copies: lifetime, drops, and a fill racing a drop."""

from __future__ import annotations

from gateway.cache import Entry, LocalCopies

ENTRY = Entry(200, b'{"sku": "SKU-0001"}')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def copies(capacity: int = 10) -> tuple[LocalCopies, Clock]:
    clock = Clock()
    return LocalCopies(ttl_s=1.0, capacity=capacity, clock=clock), clock


def test_a_copy_lives_its_ttl():
    local, clock = copies()
    local.put("product:SKU-0001", ENTRY, local.generation)
    clock.now += 0.99
    assert local.get("product:SKU-0001") == ENTRY
    clock.now += 0.02
    assert local.get("product:SKU-0001") is None


def test_a_drop_removes_the_named_copies_only():
    local, _ = copies()
    for name in ("a", "b"):
        local.put(name, ENTRY, local.generation)
    local.drop(["a"])
    assert (local.get("a"), local.get("b")) == (None, ENTRY)


def test_a_copy_read_before_a_drop_is_not_kept():
    local, _ = copies()
    read_at = local.generation  # the reader fetched from Redis here...
    local.drop(["a"])  # ...an order's notice arrived meanwhile...
    local.put("a", ENTRY, read_at)  # ...so what it read may be stale
    assert local.get("a") is None
    local.put("a", ENTRY, local.generation)
    assert local.get("a") == ENTRY


def test_clear_forgets_everything_and_outdates_reads_in_flight():
    local, _ = copies()
    local.put("a", ENTRY, local.generation)
    read_at = local.generation
    local.clear()
    local.put("b", ENTRY, read_at)
    assert (local.get("a"), local.get("b")) == (None, None)


def test_a_client_reads_around_for_its_window():
    local, clock = copies()
    local.read_around("key:me", 5.0)
    assert local.reading_around("key:me") and not local.reading_around("key:other")
    clock.now += 5.01
    assert not local.reading_around("key:me")


def test_copies_stay_within_capacity():
    local, _ = copies(capacity=3)
    for n in range(5):
        local.put(f"p{n}", ENTRY, local.generation)
    assert sum(local.get(f"p{n}") is not None for n in range(5)) <= 3
    assert local.get("p4") == ENTRY
