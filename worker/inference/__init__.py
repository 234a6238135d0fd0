"""Synchronous inference in the worker: loaded models (engine), request batching (batcher) and the
Celery tasks the API waits on (tasks), plus the API's side of that exchange (client)."""
