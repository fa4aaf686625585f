"""GET /api/v1/openapi.json describes exactly the routes the collector serves."""

from __future__ import annotations

from typing import Any

from collector.api.openapi import openapi_document
from collector.api.query import EXPORT_PARAMETERS, FILTER_PARAMETERS
from collector.app import make_app
from collector.config import CollectorConfig
from tests.collector.conftest import Client


def served_operations(config: CollectorConfig) -> set[tuple[str, str]]:
    """The API's routes (the web dashboard's pages, for browsers, are not the API's)."""
    from collector.dashboard.security import is_dashboard_path

    app = make_app(config)
    operations = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path and not is_dashboard_path(path):
            operations.add((route.method.lower(), path))
    return operations


def test_every_route_is_documented_and_nothing_else(config: CollectorConfig) -> None:
    """The document's (method, path) pairs are the app's routes, one for one."""
    doc = openapi_document()
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert documented == served_operations(config)


def test_analyst_parameters_match_the_code() -> None:
    """The filter parameters in the document are the ones query.py accepts."""
    paths = openapi_document()["paths"]
    components = openapi_document()["components"]["parameters"]

    def names(path: str) -> tuple[str, ...]:
        out = []
        for p in paths[path]["get"]["parameters"]:
            if "$ref" in p:
                p = components[p["$ref"].rsplit("/", 1)[-1]]
            out.append(p["name"])
        return tuple(out)

    assert names("/api/v1/compare") == FILTER_PARAMETERS
    assert names("/api/v1/leaks") == FILTER_PARAMETERS
    assert names("/api/v1/export") == EXPORT_PARAMETERS


async def test_the_document_is_served_as_json(client: Client) -> None:
    """GET /api/v1/openapi.json answers the OpenAPI 3.1 document without a token."""
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    assert doc["openapi"].startswith("3.1")
    assert doc == openapi_document()
