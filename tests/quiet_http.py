"""Local HTTP servers for tests (downloads, webhook receivers) without request lines on stderr."""

from __future__ import annotations

from typing import Any


class QuietLog:
    """Mix in before an http.server handler class: its per-request access log is noise in test output."""

    def log_message(self, format: str, *args: Any) -> None:
        return None
