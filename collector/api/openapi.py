"""GET /api/v1/openapi.json: the OpenAPI 3.1 description of every endpoint.

The document is ``openapi.yaml`` next to this module, written by hand so that it reads as
the reference it is; it is parsed once and served as JSON. ``tests/collector/test_openapi``
checks that it names exactly the routes the collector serves and the query parameters the
analyst endpoints take, and CI runs schemathesis with it against a live collector.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import yaml
from aiohttp import web


@cache
def openapi_document() -> dict[str, Any]:
    """The parsed document (the same object on every call: do not change it)."""
    text = resources.files("collector.api").joinpath("openapi.yaml").read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@cache
def _body() -> bytes:
    return json.dumps(openapi_document(), indent=1, sort_keys=False).encode("utf-8")


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", get_openapi)
