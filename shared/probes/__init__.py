"""The steps of a web measurement (DNS, TCP, TLS, HTTP) and their orchestration (web.py)."""
