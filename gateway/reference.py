"""The public contract, served by the gateway: `GET /openapi.json` and a reference page at
`GET /docs`, rendered on the server from the same description (no scripts, no assets)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, render_template

from paxkit.config import REPO_ROOT

PUBLIC_SPEC = REPO_ROOT / "docs" / "openapi" / "public.yaml"
METHODS = ("get", "put", "post", "delete", "patch")

reference = Blueprint("reference", __name__, template_folder="templates")


@dataclass(frozen=True)
class Operation:
    """One operation of the description, as the page shows it."""

    method: str
    path: str
    spec: dict[str, Any]

    @property
    def anchor(self) -> str:
        return f"{self.method}-{self.path}".replace("/", "-").replace("{", "").replace("}", "")


class ApiReference:
    """The public OpenAPI description, read from its file the first time it is asked for."""

    def __init__(self, path: Path = PUBLIC_SPEC) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._spec: dict[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        with self._lock:
            if self._spec is None:
                self._spec = yaml.safe_load(self.path.read_text())
            return self._spec

    def operations(self) -> list[Operation]:
        """Every operation, path by path, with the path's own parameters folded in."""
        found = []
        for path, item in self.spec()["paths"].items():
            shared = item.get("parameters", [])
            for method in METHODS:
                if method in item:
                    operation = dict(item[method])
                    operation["parameters"] = [*shared, *operation.get("parameters", [])]
                    found.append(Operation(method, path, operation))
        return found


def current_reference() -> ApiReference:
    api_reference: ApiReference = current_app.extensions["paxmart.reference"]
    return api_reference


def pretty(value: Any) -> str:
    """A schema or an example, indented for the page."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@reference.get("/openapi.json")
def openapi() -> Response:
    body = json.dumps(current_reference().spec(), ensure_ascii=False)
    return Response(body, mimetype="application/json")


@reference.get("/docs")
def reference_page() -> str:
    api_reference = current_reference()
    spec = api_reference.spec()
    return render_template(
        "reference.html",
        info=spec["info"],
        operations=api_reference.operations(),
        schemas=spec.get("components", {}).get("schemas", {}),
        pretty=pretty,
    )
