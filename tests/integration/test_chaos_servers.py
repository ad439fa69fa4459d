"""The chaos run's own servers and its proxy, for real: each started here on ports of the
test's own, faulted, and brought back, within a deadline."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from infra.chaos.proxy import Proxy
from infra.chaos.servers import OwnRabbit, OwnRedis, PgClusters, RabbitPorts, work_dir
from infra.deps import rabbitmq_ok
from infra.util import port_open
from paxkit.config import Settings
from tests.conftest import SLOT
from tests.integration.gateway_kit import free_port

pytestmark = pytest.mark.timeout(240)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: int) -> Iterator[Proxy]:
    running = Proxy(free_port(), ("127.0.0.1", echo)).start()
    yield running
    running.stop()


def _connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=1)


def _echoes(sock: socket.socket, data: bytes = b"ping") -> bool:
    sock.sendall(data)
    try:
        return sock.recv(1024) == data
    except (TimeoutError, ConnectionError):
        return False


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(1024) == b""
    except ConnectionError:
        return True


def test_the_proxy_forwards_until_partitioned(proxy: Proxy) -> None:
    with _connect(proxy) as sock:
        assert _echoes(sock)
        proxy.partition()
        assert not _echoes(sock), "a partitioned connection must carry nothing"
        with _connect(proxy) as during:
            assert not _echoes(during), "a connection made during the partition neither"
        proxy.heal()
        assert _closed(sock), "what the partition froze is closed, not resumed"
    with _connect(proxy) as after:
        assert _echoes(after)


def test_the_proxy_drops_connections(proxy: Proxy) -> None:
    with _connect(proxy) as sock:
        assert _echoes(sock)
        proxy.drop()
        assert not _echoes(sock)
    proxy.heal()
    with _connect(proxy) as after:
        assert _echoes(after)


@pytest.fixture
def chaos_folder(settings: Settings) -> Iterator[Path]:
    """Beside the chaos run's folder (reachable by `postgres` and `rabbitmq` as root)."""
    run_folder = work_dir(settings.state_dir)
    folder = run_folder.with_name(f"{run_folder.name}-test{SLOT}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_own_redis_pauses_and_restarts_empty(chaos_folder: Path) -> None:
    server = OwnRedis(chaos_folder / "redis", free_port()).start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=0.5)
        client.set("k", "v")
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        server.resume()
        assert client.get("k") == b"v"
        server.kill()
        assert not server.answers()
        server.start()
        assert redis.Redis.from_url(server.url, socket_timeout=1).get("k") is None
    finally:
        server.stop()


def _answers(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def test_own_postgres_cluster_restarts_stops_and_starts(
    settings: Settings, chaos_folder: Path
) -> None:
    base = dataclasses.replace(settings, db_prefix="")
    clusters = PgClusters(base, ["postgres"], chaos_folder / "pg", first_port=free_port())
    try:
        clusters.start_all()
        url = clusters.url("postgres")
        assert _answers(url)
        with psycopg2.connect(url, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute("SHOW max_prepared_transactions")
            assert int(cur.fetchone()[0]) > 0
        clusters.restart_immediate("postgres")
        assert _answers(url)
        clusters.stop("postgres")
        assert not _answers(url)
        clusters.start("postgres")
        assert _answers(url)
    finally:
        clusters.stop_all()
    assert not port_open("127.0.0.1", clusters.ports["postgres"])


def test_own_rabbitmq_node_is_killed_and_comes_back(chaos_folder: Path) -> None:
    ports = RabbitPorts(free_port(), free_port(), f"paxmart_chaos_test{SLOT}@localhost")
    node = OwnRabbit(chaos_folder / "rabbitmq", ports).start()
    try:
        assert rabbitmq_ok(node.url)
        assert node.ctl("status").returncode == 0
        node.kill()
        assert not port_open("127.0.0.1", ports.amqp)
        node.start()
        assert rabbitmq_ok(node.url)
    finally:
        node.stop()
    assert not port_open("127.0.0.1", ports.amqp)
