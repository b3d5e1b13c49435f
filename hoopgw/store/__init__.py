"""
The gateway's queryable state: sessions, reviews and access grants.

L{SQLiteStore} is the embedded default; L{MemoryStore} is for tests and
library users; L{read_sessions} is the admin CLI's read-only view.
"""

from hoopgw.store._common import (
    SESSION_COLUMNS,
    DuplicateSession,
    SessionFilter,
    StoreError,
    UnknownSession,
)
from hoopgw.store.memory import MemoryStore
from hoopgw.store.sqlite import SQLiteStore, read_sessions

#: The store's file name inside C{[gateway] data_dir}, so that the gateway
#: (L{hoopgw.tap}) and the admin CLI open the same file.
FILENAME = "store.sqlite3"

__all__ = [
    "FILENAME",
    "SESSION_COLUMNS",
    "DuplicateSession",
    "MemoryStore",
    "SQLiteStore",
    "SessionFilter",
    "StoreError",
    "UnknownSession",
    "read_sessions",
]
