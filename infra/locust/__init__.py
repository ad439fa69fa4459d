"""Locust load tests against a running stack (`make load`, `make load-ui`)."""
