"""What a component declares, and the objects its composition root builds.

A component (a participant service, the coordinator, the gateway, ...) declares one
`ComponentSpec` in its own package and names it in deploy/stack.toml. Its `build` is the
composition root: it makes the component's objects (database handles, clients, protocol
branches) without side effects, no connection opened and no thread started. Then:

- a web process (paxkit.web) registers the component's routes on a Flask app and serves
  HTTP; the work every web process needs of its own (`web_process`, e.g. a subscription
  to invalidation notices) is started by the server's worker hook, never by the factory;
- a worker process (paxkit.worker) runs the component's `background` work (outbox relays,
  consumers, recovery, reconcilers, retention) until SIGTERM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from flask import Flask

from paxkit.config import Settings


class Background(Protocol):
    """A piece of work that runs on its own thread until stopped."""

    name: str

    def start(self) -> Background: ...

    def stop(self, timeout_s: float = 5.0) -> None: ...


class Component:
    """A component's objects; subclasses override what they have."""

    # Only the other components of the stack may call it (paxkit.auth); the gateway is not.
    internal = True

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings

    def register(self, app: Flask) -> None:
        """Put the component's routes and request-time objects on its web app."""

    def web_process(self) -> list[Background]:
        """Work each web process runs beside serving (started by the server's hook)."""
        return []

    def background(self) -> list[Background]:
        """The work the component's worker process runs."""
        return []

    def close(self) -> None:
        """Release pools and connections (tests, clean shutdown)."""


@dataclass(frozen=True)
class ComponentSpec:
    """A component's declaration: its name, its composition root, its database's schema."""

    name: str
    build: Callable[[Settings], Component]
    migrations: tuple[Path, ...] = ()
