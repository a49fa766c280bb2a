"""The store package owns every SQL statement of the gateway (SQLite, WAL mode)."""

from llmgw_jupyter.store.db import Database

__all__ = ["Database"]
