"""Locust users for tests/hardening/test_load.py: each samples images of one model as fast as answers come.

Run by the test as a subprocess (`python -m locust --headless -f this file ...`): locust monkeypatches the
standard library with gevent, which must not happen inside pytest. Configured by environment:
LOAD_MODEL_ID (the model to sample) and LOAD_REPORT (where the status counts are written as JSON).

Each request is filed in locust's statistics under its status ("sample 200", "sample 429", ...), so
the stats CSV has the percentiles of admitted requests apart from the quick refusals. 200, 429 and 503
count as successes; anything else, a 429/503 without Retry-After, or no answer at all is a failure and
counted in the report.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter

from locust import FastHttpUser, events, task

MODEL_ID = os.environ.get("LOAD_MODEL_ID", "")
REPORT = os.environ.get("LOAD_REPORT", "load-report.json")
ALLOWED = {200, 429, 503}

statuses: Counter[str] = Counter()
missing_retry_after: Counter[str] = Counter()
bad_bodies: list[str] = []


class Sampler(FastHttpUser):
    # No think time: every user has a request open almost all the time, so the service sees as many
    # concurrent requests as there are users.
    wait_time = staticmethod(lambda: 0.0)  # type: ignore[assignment]
    network_timeout = 90.0
    connection_timeout = 90.0

    @task
    def sample(self) -> None:
        seed = random.randrange(2**32)
        with self.client.get(
            f"/v1/models/{MODEL_ID}/images/{seed}.png", catch_response=True, name="sample"
        ) as response:
            code = response.status_code or 0
            statuses[str(code)] += 1
            response.request_meta["name"] = f"sample {code}"
            if code in (429, 503) and not response.headers.get("Retry-After"):
                missing_retry_after[str(code)] += 1
                response.failure(f"{code} without Retry-After")
            elif code in ALLOWED:
                response.success()
            else:
                if len(bad_bodies) < 20:
                    bad_bodies.append(f"{code}: {(response.text or '')[:300]}")
                response.failure(f"status {code}")


@events.quitting.add_listener
def write_report(environment: object, **_: object) -> None:
    with open(REPORT, "w") as fh:
        json.dump(
            {
                "statuses": dict(statuses),
                "missing_retry_after": dict(missing_retry_after),
                "bad_bodies": bad_bodies,
            },
            fh,
        )
