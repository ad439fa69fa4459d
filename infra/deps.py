"""Redis and RabbitMQ: use them when they answer, else start them from the installed binaries."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pika
import redis

from infra.util import is_loopback, port_open, setup_logging, tail, wait_until
from paxkit.config import Settings, load_settings

log = logging.getLogger(__name__)

REDIS_DEADLINE_S = 10.0
RABBITMQ_DEADLINE_S = 60.0


def redis_ok(url: str) -> bool:
    """True when Redis answers PING within a second."""
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _amqp_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    return parts.hostname or "127.0.0.1", parts.port or default_port


def rabbitmq_ok(url: str) -> bool:
    """True when RabbitMQ accepts TCP and completes an AMQP handshake."""
    return rabbitmq_error(url) is None


def rabbitmq_error(url: str) -> str | None:
    """Why RabbitMQ at url is not usable, or None when it is."""
    host, port = _amqp_address(url)
    if not port_open(host, port):
        return f"nothing listens on {host}:{port}"
    params = pika.URLParameters(url)
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    params.stack_timeout = 5
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        return f"AMQP handshake failed: {exc!r}"
    return None


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(
            f"`{name}` is not installed (not on PATH) and the server it provides is not "
            "reachable; install it or point the paxmart settings at a running server"
        )
    return path


def _require_startable(what: str, host: str, port: int, url: str, error: str = "") -> None:
    """Only start a server on a free loopback port."""
    if not is_loopback(host):
        raise SystemExit(f"{what} at {url} is not reachable, and it is not local to start it")
    if port_open(host, port):
        raise SystemExit(
            f"something listens on {host}:{port} but does not answer as {what} for {url} "
            f"(wrong password, vhost or server?); fix the URL or free the port. {error}"
        )


def _log_dir(settings: Settings) -> Path:
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def ensure_redis(settings: Settings) -> bool:
    """Make Redis answer at settings.redis_url; True when we started it."""
    url = settings.redis_url
    if redis_ok(url):
        return False
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    _require_startable("Redis", host, port, url)
    logfile = _log_dir(settings) / "redis.log"
    cmd = [
        _binary("redis-server"),
        *("--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(port)),
        *("--save", "", "--appendonly", "no"),
        *("--dir", str(settings.state_dir), "--logfile", str(logfile)),
    ]
    log.info("starting Redis on 127.0.0.1:%d (log %s)", port, logfile)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0 or not wait_until(lambda: redis_ok(url), REDIS_DEADLINE_S, 0.2):
        raise SystemExit(
            f"Redis did not come up at {url} within {REDIS_DEADLINE_S:.0f}s "
            f"({result.stderr.strip()}); last lines of {logfile}:\n{tail(logfile)}"
        )
    return True


def ensure_rabbitmq(settings: Settings) -> bool:
    """Make RabbitMQ answer at settings.amqp_url; True when we started it."""
    url = settings.amqp_url
    error = rabbitmq_error(url)
    if error is None:
        return False
    host, port = _amqp_address(url)
    _require_startable("RabbitMQ", host, port, url, error)
    binary = _binary("rabbitmq-server")
    logfile = _log_dir(settings) / "rabbitmq.log"
    env = {**os.environ, "RABBITMQ_NODE_PORT": str(port)}
    log.info("starting RabbitMQ on port %d (startup output in %s)", port, logfile)
    with logfile.open("ab") as out:
        result = subprocess.run(
            [binary, "-detached"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
            timeout=60,
        )
    ready = result.returncode == 0 and wait_until(
        lambda: rabbitmq_ok(url), RABBITMQ_DEADLINE_S, 0.5
    )
    if not ready:
        raise SystemExit(
            f"RabbitMQ did not come up at {host}:{port} within {RABBITMQ_DEADLINE_S:.0f}s "
            f"(rabbitmq-server exited {result.returncode}); the node's own log is usually in "
            f"/var/log/rabbitmq/; last lines of {logfile}:\n{tail(logfile)}"
        )
    return True


def ensure_all(settings: Settings) -> None:
    """Redis and RabbitMQ both reachable, started locally when needed."""
    for name, ensure in (("Redis", ensure_redis), ("RabbitMQ", ensure_rabbitmq)):
        started = ensure(settings)
        log.info("%s %s", name, "started" if started else "already running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make sure Redis and RabbitMQ are running.")
    parser.parse_args(argv)
    setup_logging()
    ensure_all(load_settings())
    return 0


if __name__ == "__main__":
    sys.exit(main())
