"""Specification tests of the tool registry and handlers (a package so that
``tools.gateway_harness`` can be shared with the gateway, grant and CLI tests)."""
