"""A TCP proxy on loopback that the chaos runner controls: a network partition on demand.

It sits between the coordinator and one participant (the coordinator's
PAXMART_<NAME>_URL points at it; everyone else reaches the participant directly), so the
participant is unreachable from the coordinator only.

- `pass`: bytes flow both ways.
- `blackhole`: nothing flows; connections open and new ones are accepted, but no byte is
  forwarded (the caller sees timeouts, as with packets dropped). When the partition
  heals, the connections it froze are closed, never resumed.
- `drop`: every connection is reset and new ones are reset at once (the caller sees
  connection errors).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
from enum import Enum

log = logging.getLogger(__name__)

CHUNK = 65536
TICK_S = 0.1
SEND_TIMEOUT_S = 10.0


class Mode(Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP = "drop"


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a dropped connection looks to its peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pipe:
    """One client connection and, once it may flow, its upstream connection."""

    def __init__(self, proxy: Proxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.frozen = False

    def run(self) -> None:
        try:
            while not self.proxy.stopping.is_set() and self._step():
                pass
        except OSError:
            pass
        finally:
            self.close()
            self.proxy.forget(self)

    def _step(self) -> bool:
        mode = self.proxy.mode
        if mode is Mode.DROP or (self.frozen and mode is Mode.PASS):
            return False
        if mode is Mode.BLACKHOLE:
            self.frozen = True
            self.proxy.changed.wait(TICK_S)
            return True
        if self.upstream is None:
            self.upstream = socket.create_connection(self.proxy.target, timeout=SEND_TIMEOUT_S)
        readable, _, _ = select.select([self.client, self.upstream], [], [], TICK_S)
        for sock in readable:
            data = sock.recv(CHUNK)
            if not data:
                return False
            other = self.upstream if sock is self.client else self.client
            other.sendall(data)
        return True

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                _reset(sock)


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards to `target` while the mode is `pass`."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self.mode = Mode.PASS
        self.stopping = threading.Event()
        self.changed = threading.Event()
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pipes)

    def start(self) -> Proxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(TICK_S)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="chaos-proxy", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: Mode) -> None:
        log.info("proxy :%d -> %s:%d now %s", self.port, *self.target, mode.value)
        self.mode = mode
        self.changed.set()
        self.changed.clear()

    def partition(self) -> None:
        self.set_mode(Mode.BLACKHOLE)

    def drop(self) -> None:
        self.set_mode(Mode.DROP)

    def heal(self) -> None:
        self.set_mode(Mode.PASS)

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.close()

    def forget(self, pipe: _Pipe) -> None:
        with self._lock:
            self._pipes.discard(pipe)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode is Mode.DROP:
                _reset(client)
                continue
            client.settimeout(SEND_TIMEOUT_S)
            pipe = _Pipe(self, client)
            with self._lock:
                self._pipes.add(pipe)
            threading.Thread(target=pipe.run, name="chaos-proxy-pipe", daemon=True).start()
