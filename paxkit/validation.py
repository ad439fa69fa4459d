"""Field validators shared by every edge that accepts identifiers from clients."""

from __future__ import annotations

import re
from typing import Any

from paxkit.errors import InvalidInput

SKU_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_INT = 2**31 - 1
GTID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")


def validate_sku(value: Any, field: str) -> str:
    if not isinstance(value, str) or not SKU_PATTERN.match(value):
        raise InvalidInput(field, "must be a SKU such as 'SKU-0001'")
    return value


def validate_positive_int(value: Any, field: str, maximum: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(field, f"must be an integer from 1 to {maximum}")
    return value


def validate_user_id(raw: str) -> int:
    """A user id from a URL path segment."""
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_INT:
        raise InvalidInput("user_id", f"must be an integer from 1 to {MAX_INT}")
    return int(raw)


def validate_gtid(value: Any) -> str:
    """A global transaction id: also used inside prepared-transaction ids, so kept plain."""
    if not isinstance(value, str) or not GTID_PATTERN.match(value):
        raise InvalidInput("gtid", "gtid must be 1-120 characters of [A-Za-z0-9_.-]")
    return value
