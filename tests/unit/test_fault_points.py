"""A fault point whose arming can't be read does not fire (and does not fail)."""

from __future__ import annotations

import socket

import redis

from paxkit.faults import Faults


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_point_passes_when_redis_does_not_answer():
    client = redis.Redis(port=closed_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    Faults("coordinator", client).hit("consumer_after_commit")  # no exception, no fault


def test_points_are_free_when_faults_are_off():
    Faults("coordinator", None).hit("consumer_after_commit")
