"""Loopback target sites for the agent's tests: plain HTTP pages on 127.0.0.1."""

from __future__ import annotations

from aiohttp import web


def site_app() -> web.Application:
    """Every path answers a small page whose title names the path."""

    async def page(request: web.Request) -> web.Response:
        body = f"<html><head><title>Page {request.path}</title></head><body>hello</body></html>"
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app
