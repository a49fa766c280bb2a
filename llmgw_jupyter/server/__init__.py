"""Jupyter server extension: REST API, MCP endpoint and the Tornado -> ASGI bridge."""
