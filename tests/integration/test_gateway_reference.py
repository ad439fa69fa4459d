"""The gateway serves its own contract: the public OpenAPI description as JSON, and a page
rendered from it on the server that needs nothing from anywhere else."""

from __future__ import annotations

import re

import yaml

from gateway.reference import PUBLIC_SPEC


def test_openapi_json_is_the_public_spec(gw):
    response = gw.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == yaml.safe_load(PUBLIC_SPEC.read_text())


def test_the_reference_page_shows_every_operation(gw):
    response = gw.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    spec = yaml.safe_load(PUBLIC_SPEC.read_text())
    for path in spec["paths"]:
        assert f"<code>{path}</code>" in response.text, path


def test_the_reference_page_loads_nothing_from_elsewhere(gw):
    page = gw.get("/docs").text
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert not re.search(r"""<link[^>]+stylesheet""", page)
