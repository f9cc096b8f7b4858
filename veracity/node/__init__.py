"""Node daemons and their I/O: blob store over HTTP, SQLite state, job runner (in progress)."""
