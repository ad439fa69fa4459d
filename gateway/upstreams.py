"""The gateway's clients for every component behind it."""

from __future__ import annotations

from urllib.parse import quote

from paxkit.config import Settings
from paxkit.http import ServiceClient

UPSTREAMS = ("order", "inventory", "coupon", "redpacket", "coordinator")


def make_upstreams(settings: Settings) -> dict[str, ServiceClient]:
    return {
        name: ServiceClient(name, settings.urls[name], settings.http_timeout_s)
        for name in UPSTREAMS
    }


def segment(value: str) -> str:
    """A client-supplied path segment, escaped so it can't change the upstream path."""
    return quote(value, safe="")
