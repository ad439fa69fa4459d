"""The pieces of a scaled stack that need no server: instance ports, the haproxy.cfg, the
quorum queues' arguments and the settings that pick them."""

from __future__ import annotations

import pytest

from infra.balancer import Backend, Instance, haproxy_config, instance_port
from paxkit.messaging import CLASSIC, QUORUM, QueueKind


def test_instances_sit_a_step_above_the_public_port() -> None:
    assert [instance_port(8000, i) for i in (1, 2)] == [8100, 8200]
    assert instance_port(18520, 2, step=25) == 18570
    with pytest.raises(ValueError):
        instance_port(8000, 0)


def test_the_config_has_a_frontend_on_the_public_port_and_checks_every_instance() -> None:
    backend = Backend("order", 8011, (Instance("order-1", 8111), Instance("order-2", 8211)), "/h")
    config = haproxy_config([backend])
    assert "frontend order\n    bind 127.0.0.1:8011\n" in config
    assert "option httpchk GET /h" in config
    assert "server order-1 127.0.0.1:8111 check" in config
    assert "server order-2 127.0.0.1:8211 check" in config
    # Only a connection that failed is tried elsewhere: a received order is never resent.
    assert "retry-on conn-failure\n" in config


def test_classic_queues_keep_todays_arguments() -> None:
    kind = QueueKind(CLASSIC)
    assert kind.consumer_arguments("q.dead") == {}
    assert kind.arguments("q") == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"}


def test_quorum_queues_dead_letter_at_least_once_past_the_delivery_limit() -> None:
    assert QueueKind(QUORUM, 3).consumer_arguments("q.dead") == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "q.dead",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 3,
    }


def test_a_bad_queue_type_or_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="queue type"):
        QueueKind("stream")
    with pytest.raises(ValueError, match="delivery limit"):
        QueueKind(QUORUM, 0)


def test_settings_pick_the_queue_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from paxkit.config import load_settings
    from paxkit.messaging import Topology

    assert Topology.of(load_settings()).kind == QueueKind(CLASSIC, 20)
    monkeypatch.setenv("PAXMART_AMQP_QUEUE_TYPE", "quorum")
    monkeypatch.setenv("PAXMART_AMQP_DELIVERY_LIMIT", "5")
    assert Topology.of(load_settings()).kind == QueueKind(QUORUM, 5)
