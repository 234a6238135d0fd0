"""Container health check for a worker: is a Celery node on this host answering over the broker?

`celery inspect ping` needs an importable app object, and ours is built from settings by
`make_celery`, so the check builds it the same way and pings only the nodes named for this host
(`runner.default_hostname` is `stylegan-<pid>@<host>`). Exit 0 when one answers within the timeout.
"""

from __future__ import annotations

import socket
import sys

TIMEOUT_S = 10.0


def main() -> int:
    from worker.celery_app import make_celery
    from worker.settings import get_settings

    app = make_celery(get_settings())
    try:
        replies = app.control.ping(timeout=TIMEOUT_S) or []
    except Exception as exc:  # broker down: unhealthy, with the reason on one line
        sys.stderr.write(f"broker unreachable: {type(exc).__name__}: {exc}\n")
        return 1
    suffix = "@" + socket.gethostname()
    ours = [name for reply in replies for name in reply if name.endswith(suffix)]
    if not ours:
        sys.stderr.write(f"no worker on {socket.gethostname()} answered a ping in {TIMEOUT_S:.0f} s\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
