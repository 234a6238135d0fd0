"""The API side of webhooks: checking a job request's `webhook_url` before the job row is written.

Every service that creates jobs calls `check_webhook_url` and passes the result to
`worker.jobs.submit_job(..., webhook_url=...)`; the delivery itself is worker/webhooks.py.
"""

from __future__ import annotations

from api.errors import naming
from worker.net import check_public_url
from worker.settings import Settings


def check_webhook_url(settings: Settings, url: str | None, *, field: str = "body webhook_url") -> str | None:
    """`url` if the service may POST to it (http(s), a public host unless private URLs are allowed);
    422 naming `field` otherwise. None stays None (no webhook)."""
    if url is None:
        return None
    with naming(field, got=url[:200]):
        return check_public_url(url, settings.allow_private_urls)
