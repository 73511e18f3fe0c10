"""``alignflow serve-reward``: a reward behind HTTP that holds under hostile clients.

Wire format and client: :mod:`alignflow.rewards.remote`. Every request gets an answer
or a closed connection within a bounded time, and the memory a request can take is
bounded:

- at most ``max_connections`` open connections (more get a 503 and are closed), a
  listen backlog of 128 for bursts;
- each connection's reads wait at most ``read_timeout`` seconds for a byte and the
  whole request (headers and body) must arrive within ``request_timeout`` seconds
  (a client sending one byte a second is cut off);
- request line and headers together at most ``max_header_kb`` KiB (431 beyond);
- a body at most ``max_mb`` MiB (413), and bodies being read or scored at once at most
  ``max_inflight_mb`` MiB together (503 beyond: the client backs off and retries);
- JSON in the request (the safetensors header, prompts, metadata) at most 32 levels
  deep with numbers of at most 40 characters;
- with a token (``--token`` or ``ALIGNFLOW_REWARD_TOKEN``), every request needs
  ``Authorization: Bearer <token>`` (401 otherwise); binding to anything but
  loopback without one prints a warning. The server speaks plain HTTP: put TLS in
  front of it with a reverse proxy (docs/reliability.md).

Answers: 200 with the scores; 4xx with a JSON ``{"error": ...}`` when the request is
wrong, 422 when the reward's contract is (missing metadata, a wrong shape), neither
retried by the client; 500 when the reward fails at run time, 503 when busy, both
retried. The reward runs one call at a time.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alignflow.rewards.remote import TOKEN_ENV, BadRequest, decode_request, encode_answer
from alignflow.sdk.errors import ConfigError, RewardError, RewardFailure
from alignflow.sdk.rewards import score

log = logging.getLogger(__name__)


class _Deadline(io.RawIOBase):
    """A socket's reads, each waiting at most ``idle`` seconds and all of them ending by
    ``deadline`` (time.monotonic()); past it a read raises TimeoutError."""

    def __init__(self, sock: socket.socket, idle: float, deadline: float):
        self.sock, self.idle, self.deadline = sock, idle, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long to arrive")
        self.sock.settimeout(min(self.idle, left))
        return self.sock.recv_into(buffer)


class _HeaderBudget:
    """The buffered reader of a request, counting what ``readline`` (the request line and
    headers) consumes: past ``limit`` bytes it raises LineTooLong, which the handler
    answers with 431."""

    def __init__(self, reader: io.BufferedReader, limit: int):
        self.reader, self.left = reader, limit

    def readline(self, size: int = -1) -> bytes:
        line = self.reader.readline(min(size, self.left + 1) if size >= 0 else self.left + 1)
        self.left -= len(line)
        if self.left < 0:
            raise http.client.LineTooLong("request line and headers")
        return line

    def read(self, size: int = -1) -> bytes:
        return self.reader.read(size)

    def close(self) -> None:
        self.reader.close()


class _Server(ThreadingHTTPServer):
    request_queue_size = (
        128  # the listen backlog: a burst of clients waits instead of being refused
    )
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int):
        self.max_connections, self.open_connections = max_connections, 0
        self.count_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.count_lock:
            full = self.open_connections >= self.max_connections
            if not full:
                self.open_connections += 1
        if full:  # answered and closed here, without a thread
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                body = b'{"error": "too many open connections; retry later"}'
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.count_lock:
                self.open_connections -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class RewardServer:
    """Serves ``reward`` (any reward object) on http://host:port; ``port=0`` picks a free
    port (see :attr:`port`). The limits are described in the module docstring."""

    def __init__(
        self,
        reward: Any,
        name: str = "",
        host: str = "127.0.0.1",
        port: int = 8765,
        max_mb: float = 64,
        max_batch: int = 1024,
        read_timeout: float = 10.0,
        request_timeout: float = 120.0,
        max_connections: int = 64,
        max_inflight_mb: float | None = None,
        max_header_kb: float = 16,
        token: str | None = None,
    ):
        self.reward, self.name = reward, name
        self.modality = getattr(reward, "modality", None)
        if self.modality is None:
            raise ConfigError("reward", name, "a reward with a 'modality' attribute")
        self.max_bytes, self.max_batch = int(max_mb * 2**20), max_batch
        self.max_inflight = int(
            (max_inflight_mb if max_inflight_mb is not None else 4 * max_mb) * 2**20
        )
        self.inflight, self.inflight_lock = 0, threading.Lock()
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.lock = threading.Lock()  # one reward call at a time
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                raw = _Deadline(self.connection, read_timeout, time.monotonic() + request_timeout)
                self.rfile = _HeaderBudget(io.BufferedReader(raw, 65536), int(max_header_kb * 1024))

            def handle(self):  # one request per connection: its deadline covers that request only
                try:
                    self.handle_one_request()
                except http.client.LineTooLong:  # the request line alone is over the budget
                    self.command, self.requestline, self.request_version = None, "", "HTTP/1.1"
                    with contextlib.suppress(OSError):
                        self._error(431, f"request line and headers over {max_header_kb:g} KiB")
                except (TimeoutError, ConnectionError):
                    pass  # too slow or gone: the connection is closed, nothing to answer

            def log_message(self, fmt, *args):
                log.debug("%s " + fmt, self.address_string(), *args)

            def _answer(self, status: int, body: bytes, kind: str = "application/octet-stream"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def send_error(
                self, code, message=None, explain=None
            ):  # http.server's own errors, as JSON
                self.close_connection = True
                self._answer(
                    code,
                    json.dumps({"error": message or self.responses.get(code, ("",))[0]}).encode(),
                    "application/json",
                )

            def _error(self, status: int, message: str):
                self.close_connection = True
                self._answer(status, json.dumps({"error": message}).encode(), "application/json")

            def _authorised(self) -> bool:
                if server.token is None:
                    return True
                given = self.headers.get("Authorization", "")
                if hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode()):
                    return True
                self._error(401, "a valid 'Authorization: Bearer <token>' header is required")
                return False

            def do_GET(self):
                if not self._authorised():
                    return None
                if self.path != "/health":
                    return self._error(404, f"no {self.path[:100]}: GET /health or POST /score")
                info = {
                    "modality": server.modality,
                    "groupwise": bool(getattr(server.reward, "groupwise", False)),
                    "reward": server.name,
                    "heads": dict(getattr(server.reward, "heads", None) or {}),
                }
                self._answer(200, json.dumps(info).encode(), "application/json")

            def do_POST(self):
                if not self._authorised():
                    return None
                if self.path != "/score":
                    return self._error(404, f"no {self.path[:100]}: POST /score")
                try:
                    size = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    return self._error(
                        411, "a Content-Length header with the body's size is required"
                    )
                if size < 0 or size > server.max_bytes:
                    return self._error(413, f"body of {size} bytes: at most {server.max_bytes}")
                if not server._reserve(size):
                    return self._error(503, "busy: too many request bytes in memory; retry later")
                try:
                    self._score(size)
                finally:
                    server._release(size)

            def _score(self, size: int):
                try:
                    body = self.rfile.read(size)
                except (TimeoutError, OSError):
                    return self._error(
                        400, f"body shorter than its Content-Length {size} (read timed out)"
                    )
                if len(body) != size:
                    return self._error(
                        400, f"body of {len(body)} bytes, Content-Length says {size}"
                    )
                try:
                    media, prompts, metadata, groups = decode_request(
                        body, server.modality, server.max_batch
                    )
                except BadRequest as e:
                    return self._error(e.status, str(e))
                try:
                    with server.lock:
                        out = score(server.reward, media, prompts, metadata, groups, server.name)
                except RewardFailure as e:
                    # the reward failed at run time: reported, retried, the server stays up
                    log.warning("reward %s failed: %s", server.name, e)
                    return self._error(500, str(e))
                except RewardError as e:
                    # the request breaks the reward's contract: the client's to fix
                    return self._error(422, str(e))
                self._answer(200, encode_answer(out))

        try:
            self.httpd = _Server((host, port), Handler, max_connections)
        except OSError as e:
            raise ConfigError(
                "--port",
                port,
                "a free port on " + host,
                hint=f"{e.strerror}; another server may hold it; --port 0 picks a free one",
            ) from e
        self.host, self.port = host, self.httpd.server_address[1]
        if self.token is None and not _loopback(host):
            log.warning(
                "serving on %s without a token: anyone who reaches this port can use the reward; "
                "set %s or --token, and put TLS in front (docs/reliability.md)",
                host,
                TOKEN_ENV,
            )

    def _reserve(self, size: int) -> bool:
        with self.inflight_lock:
            if self.inflight + size > self.max_inflight:
                return False
            self.inflight += size
            return True

    def _release(self, size: int) -> None:
        with self.inflight_lock:
            self.inflight -= size

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> RewardServer:
        """Serve from a daemon thread (tests, notebooks)."""
        threading.Thread(target=self.serve_forever, daemon=True, name="reward-server").start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    reward_name: str,
    overrides: Sequence[str],
    host: str,
    port: int,
    max_mb: float,
    token: str | None = None,
) -> None:
    """``alignflow serve-reward``: build the reward from ``configs/reward/<reward_name>.yaml``
    with ``key=value`` overrides and serve it until interrupted."""
    from importlib import resources

    from omegaconf import OmegaConf

    from alignflow.sdk.components import builder
    from alignflow.sdk.config import check_arguments

    folder = resources.files("alignflow.configs") / "reward"
    choices = sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )
    if reward_name not in choices:  # a name from the listing, so nothing outside the group is read
        raise ConfigError("reward", reward_name, f"one of the reward configs {choices}")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError("overrides", bad[0], "key=value")
    cfg = OmegaConf.merge(
        OmegaConf.load(str(folder / f"{reward_name}.yaml")),
        OmegaConf.from_dotlist([o.removeprefix("reward.") for o in overrides]),
    )
    args = OmegaConf.to_container(cfg, resolve=True)
    args.pop("weight", None)
    name = args.pop("name", None)
    cls = builder("reward", name, "reward.name")
    check_arguments(cls, args, "reward")
    reward = cls(**args)
    server = RewardServer(
        reward, name=reward_name, host=host, port=port, max_mb=max_mb, token=token
    )
    print(
        f"serving reward {reward_name!r} ({server.modality}) on http://{server.host}:{server.port}"
        + (" (token required)" if server.token else ""),
        flush=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.httpd.server_close()
        sys.stdout.flush()
