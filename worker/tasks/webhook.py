"""The Celery side of webhooks (worker/webhooks.py): the delivery task and the relay that sends it.

Deliveries go on the `inference` queue: they are short network calls, and every deployment runs an
inference worker, while a training worker may be busy for hours.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from worker.db.session import process_sessions
from worker.settings import Settings
from worker.webhooks import deliver, dispatch_due

DELIVER_TASK_NAME = "stylegan.deliver_webhook"
WEBHOOK_QUEUE = "inference"


def register_webhook_task(app: Celery, settings: Settings) -> None:
    """Add `stylegan.deliver_webhook(delivery_id, attempts)` to `app` (called by make_celery)."""

    @app.task(  # type: ignore[untyped-decorator]
        name=DELIVER_TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        shared=False,  # this app's settings only (see worker/celery_app.make_celery)
    )
    def deliver_webhook(delivery_id: str, attempts: int) -> str:
        return deliver(settings, process_sessions(settings.effective_database_url), delivery_id, attempts)


def relay_webhooks(session: Session, celery_app: Celery, settings: Settings) -> list[str]:
    """Send every due delivery to the delivery task; run by each worker's reconciler loop."""

    def send(delivery_id: str, attempts: int) -> None:
        kwargs: dict[str, Any] = {"retry": True, "retry_policy": {"max_retries": 2, "interval_start": 0}}
        celery_app.send_task(DELIVER_TASK_NAME, args=[delivery_id, attempts], queue=WEBHOOK_QUEUE, **kwargs)

    return dispatch_due(session, settings, send)
