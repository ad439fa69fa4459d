"""Fault points: named places in the code a test can make fail, stall or kill the process.

Off unless PAXMART_FAULTS is set; then each point looks up its arming in Redis, so one
`arm()` reaches every worker process of a component. With faults off a point costs one
attribute check.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "paxmart:faults"
ACTIONS = ("fail", "stall", "kill")

# Decrement the remaining count and return the arming only while it lasts.
_TAKE = """
local spec = redis.call('GET', KEYS[1])
if not spec then return nil end
local left = redis.call('DECR', KEYS[2])
if left < 0 then return nil end
return spec
"""


class FaultInjected(Exception):
    """Raised at an armed point whose action is `fail`."""


@dataclass(frozen=True)
class Arming:
    action: str
    seconds: float = 0.0


def _keys(component: str, point: str) -> tuple[str, str]:
    base = f"{KEY_PREFIX}:{component}:{point}"
    return base, f"{base}:left"


class Faults:
    """The fault points of one component."""

    def __init__(self, component: str, redis_client: redis.Redis | None) -> None:
        self.component = component
        self.redis = redis_client
        self._take = redis_client.register_script(_TAKE) if redis_client else None

    @property
    def enabled(self) -> bool:
        return self.redis is not None

    def hit(self, point: str) -> None:
        """Pass through the point; an armed fault fires here."""
        if self._take is None:
            return
        try:
            raw = self._take(keys=list(_keys(self.component, point)))
        except redis.RedisError as err:
            # An arming that can't be read doesn't fire: with Redis down or paused, a
            # fault point must not become a fault of its own.
            log.warning("fault point %s.%s not checked: %r", self.component, point, err)
            return
        if raw is None:
            return
        arming = Arming(**json.loads(raw))
        log.warning("fault %s at %s.%s", arming.action, self.component, point)
        if arming.action == "fail":
            raise FaultInjected(f"injected failure at {self.component}.{point}")
        if arming.action == "stall":
            time.sleep(arming.seconds)
        elif arming.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


def arm(
    client: redis.Redis,
    component: str,
    point: str,
    action: str,
    times: int = 1,
    seconds: float = 0.0,
) -> None:
    """Make `component.point` fire `action` on its next `times` passes."""
    if action not in ACTIONS:
        raise ValueError(f"unknown fault action {action!r}")
    spec_key, left_key = _keys(component, point)
    pipe = client.pipeline()
    pipe.set(spec_key, json.dumps({"action": action, "seconds": seconds}))
    pipe.set(left_key, times)
    pipe.execute()


def disarm_all(client: redis.Redis) -> None:
    for key in client.scan_iter(f"{KEY_PREFIX}:*"):
        client.delete(key)
