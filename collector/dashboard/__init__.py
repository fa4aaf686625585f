"""The analysts' web dashboard, served by the collector itself (``add_dashboard(app)``).

Server-rendered pages (Jinja2 with autoescape, through aiohttp-jinja2), our own small
script for live updates and chart downloads, every asset served from ``static/``: nothing
is fetched from anywhere else, so the dashboard works on an air-gapped network. This
module stays free of imports so that the configuration can name ``DashboardConfig``
without loading the template engine.
"""
