"""The reward server under hostile clients: every request gets an answer or a closed
connection within a bounded time, memory per request is bounded, contract errors are
422 (not retried), a token keeps strangers out, a busy port is one line."""

import json
import logging
import socket
import threading
import time

import pytest
import torch
from safetensors.torch import save as st_save

from alignflow.rewards.image.digits import DigitClassifierReward
from alignflow.rewards.remote import RemoteReward, encode_request
from alignflow.rewards.server import RewardServer
from alignflow.sdk.errors import ConfigError, RewardError
from tests.rewards.test_remote import _post, _raw, digits_batch


def serve(**kw):
    return RewardServer(
        DigitClassifierReward(), name="digits", port=0, max_mb=1, max_batch=64, **kw
    ).start()


@pytest.fixture(scope="module")
def server():
    s = serve(read_timeout=1.0, request_timeout=3.0, max_connections=6, max_header_kb=4)
    yield s
    s.close()


def status_and_body(port, data, timeout=10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post_request(body, extra=b""):
    return (
        b"POST /score HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(body))
        + body
    )


def test_a_contract_error_is_422_with_json_and_not_retried(server):
    media, prompts, _ = digits_batch(4)
    status, body = status_and_body(
        server.port, post_request(encode_request(media, prompts, [{}] * 4, "image"))
    )
    assert status == 422 and "digit" in json.loads(body)["error"]
    client = RemoteReward(f"http://127.0.0.1:{server.port}", deadline=30)
    start = time.monotonic()
    with pytest.raises(RewardError, match="422 .*digit"):
        client(media, prompts, [{}] * 4)
    assert client.retries == 0 and time.monotonic() - start < 5


@pytest.mark.parametrize(
    "field,value,says",
    [
        ("metadata", "[" * 5000 + "]" * 5000, "nested more than 32 deep"),
        ("prompts", "[" + "9" * 5000 + "]", "too long or not finite"),
        ("metadata", '[{"x": 1e999}]', "not finite"),
        ("metadata", '[{"x": NaN}]', "NaN is not JSON"),
    ],
)
def test_hostile_json_is_a_400(server, field, value, says):
    media, prompts, meta = digits_batch(1)
    header = {
        "modality": "image",
        "prompts": json.dumps(prompts),
        "metadata": json.dumps(meta),
        field: value,
    }
    status, body = status_and_body(
        server.port, post_request(st_save({"media": media}, metadata=header))
    )
    assert status == 400 and says in json.loads(body)["error"]


def test_a_deep_safetensors_header_is_a_400(server):
    nested = b"[" * 100000 + b"]" * 100000
    body = len(nested).to_bytes(8, "little") + nested
    assert _post(server.port, body) == 400


def test_headers_over_the_budget_are_431(server):
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(60))  # ~7 KiB > 4 KiB
    assert _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n") == 431
    assert _raw(server.port, b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\n\r\n") == 431


def _closed_within(port, send, seconds):
    """Open a connection, run ``send(sock)``, and return how long the server took to close it."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 5) as sock:
        send(sock)
        while True:
            try:
                if not sock.recv(4096):
                    break
            except (ConnectionResetError, BrokenPipeError):
                break
    return time.monotonic() - start


def test_an_idle_connection_is_closed_after_the_read_timeout(server):
    assert _closed_within(server.port, lambda sock: None, 1.0) < 3.0


def test_a_client_dripping_bytes_is_cut_off_at_the_request_deadline(server):
    def drip(sock):
        for ch in b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([ch]))
            except OSError:
                return
            time.sleep(0.1)  # well inside read_timeout each time

    took = _closed_within(server.port, drip, 3.0)
    assert took < 6.0, took  # request_timeout 3 s, not 100 bytes x 0.1 s x ...


def test_connections_over_the_cap_get_503_and_the_server_recovers(server):
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        assert _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(1.5)  # their handler threads notice the close
    assert _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == 200


def test_bodies_in_memory_are_capped_together():
    s = serve(read_timeout=5.0, request_timeout=10.0, max_inflight_mb=1.5)  # max_mb=1
    try:
        held = socket.create_connection(("127.0.0.1", s.port))
        held.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
        )
        time.sleep(0.3)  # its million bytes are reserved while it trickles in
        media, prompts, meta = digits_batch(2)
        padded = {"modality": "image", "prompts": json.dumps(prompts), "metadata": json.dumps(meta)}
        big = st_save({"media": media}, metadata={**padded, "pad": "x" * 700000})
        status, body = status_and_body(s.port, post_request(big))
        assert status == 503 and "busy" in json.loads(body)["error"]
        held.close()
        time.sleep(0.5)
        assert _post(s.port, encode_request(media, prompts, meta, "image")) == 200
    finally:
        s.close()


def test_a_burst_of_clients_all_get_an_answer(server):
    statuses = []

    def ask():
        try:
            statuses.append(
                _raw(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=20)
            )
        except OSError as e:
            statuses.append(type(e).__name__)

    threads = [threading.Thread(target=ask) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.httpd.request_queue_size >= 100
    assert len(statuses) == 100 and set(statuses) <= {200, 503}, statuses  # none refused or reset
    assert statuses.count(200) >= 6


def test_a_token_is_required_when_set(monkeypatch):
    s = serve(token="s3cret")
    try:
        url = f"http://127.0.0.1:{s.port}"
        assert _raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == 401
        assert (
            _raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
            == 401
        )
        with pytest.raises(RewardError, match="401"):
            RemoteReward(url, deadline=5)
        media, prompts, meta = digits_batch(2)
        assert RemoteReward(url, token="s3cret")(media, prompts, meta).scores.shape == (2,)
        monkeypatch.setenv("ALIGNFLOW_REWARD_TOKEN", "s3cret")
        # the client reads it too
        assert RemoteReward(url)(media, prompts, meta).scores.shape == (2,)
    finally:
        s.close()


def test_serve_reward_takes_the_token_from_its_arguments_or_the_environment(monkeypatch):
    from alignflow.rewards import server as server_module
    from alignflow.sdk.cli import main

    seen = []
    monkeypatch.setattr(server_module, "serve", lambda *a, token=None: seen.append(token))
    main(["serve-reward", "reward=digit_classifier", "token=abc"])
    main(["serve-reward", "reward=digit_classifier", "--token", "xyz"])
    main(["serve-reward", "reward=digit_classifier"])
    assert seen == ["abc", "xyz", None]  # None: RewardServer then reads ALIGNFLOW_REWARD_TOKEN
    monkeypatch.setenv("ALIGNFLOW_REWARD_TOKEN", "from-env")
    s = RewardServer(DigitClassifierReward(), port=0)
    s.httpd.server_close()
    assert s.token == "from-env"


def test_binding_beyond_loopback_without_a_token_warns(caplog):
    with caplog.at_level(logging.WARNING):
        s = RewardServer(DigitClassifierReward(), port=0, host="0.0.0.0")
    s.httpd.server_close()
    assert "without a token" in caplog.text


def test_a_busy_port_is_one_line(capsys):
    from alignflow.sdk.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"--port = {port}: expected a free port"):
            RewardServer(DigitClassifierReward(), port=port)
        code = main(["serve-reward", "reward=digit_classifier", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert [x for x in err.splitlines() if x.startswith("alignflow:")][0].startswith(
        f"alignflow: error: --port = {port}: expected a free port"
    )


def test_the_server_still_scores_after_all_of_this(server):
    media, prompts, meta = digits_batch(3)
    out = RemoteReward(f"http://127.0.0.1:{server.port}")(media, prompts, meta)
    torch.testing.assert_close(
        out.scores, DigitClassifierReward()(media, prompts, meta).scores, rtol=0, atol=1e-6
    )
