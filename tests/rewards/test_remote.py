"""The reward server and its client: same scores as in-process, malformed requests
answered with errors while the server keeps serving, a run surviving a restart."""

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import save as st_save

from alignflow.modalities.speech.audio import Waveform
from alignflow.rewards.image.digits import DigitClassifierReward
from alignflow.rewards.remote import BadRequest, RemoteReward, decode_request, encode_request
from alignflow.rewards.server import RewardServer
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.rewards import RewardOutput


def digits_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    media = torch.rand(n, 1, 8, 8, generator=g)
    prompts = [f"a handwritten digit {i % 10}" for i in range(n)]
    return media, prompts, [{"digit": i % 10} for i in range(n)]


class Flaky:
    """The digit reward, raising on the prompt 'boom'."""

    modality = "image"

    def __init__(self):
        self.inner = DigitClassifierReward()

    def __call__(self, media, prompts, metadata):
        if "boom" in prompts:
            raise RuntimeError("the reward model fell over")
        return self.inner(media, prompts, metadata)


@pytest.fixture(scope="module")
def server():
    s = RewardServer(
        Flaky(), name="digits", port=0, max_mb=1, max_batch=64, read_timeout=1.0
    ).start()
    yield s
    s.close()


def test_remote_scores_equal_in_process_scores(server):
    client = RemoteReward(f"http://127.0.0.1:{server.port}")
    assert client.modality == "image" and not client.groupwise
    media, prompts, meta = digits_batch()
    remote, local = client(media, prompts, meta), DigitClassifierReward()(media, prompts, meta)
    assert isinstance(remote, RewardOutput)
    # the same model on the same bytes; the server thread may run another intra-op thread count
    torch.testing.assert_close(remote.scores, local.scores, rtol=0, atol=1e-6)
    assert remote.components.keys() == local.components.keys()


def test_speech_media_round_trip_their_rate_and_lengths():
    wave = Waveform(torch.randn(2, 800), 16000, torch.tensor([800, 500]))
    media, prompts, meta, groups = decode_request(
        encode_request(
            wave, ["a", "b"], [{"ref_audio": "x.wav"}, {}], "speech", torch.tensor([3, 3])
        ),
        "speech",
        8,
    )
    assert torch.equal(media.samples, wave.samples) and media.sample_rate == 16000
    assert (
        media.lengths.tolist() == [800, 500]
        and prompts == ["a", "b"]
        and meta[0] == {"ref_audio": "x.wav"}
    )
    assert groups.tolist() == [3, 3]


def test_video_media_round_trip_and_a_served_multi_head_reward_keeps_its_heads():
    from alignflow.modalities.video.video import Video
    from alignflow.rewards.video.flow import VideoFlowReward
    from alignflow.sdk.rewards import WeightedSum

    video = Video(torch.rand(2, 4, 3, 16, 16), fps=12.5)
    media, _, _, _ = decode_request(
        encode_request(video, ["a", "b"], [{}, {}], "video"), "video", 8
    )
    assert (
        isinstance(media, Video) and torch.equal(media.frames, video.frames) and media.fps == 12.5
    )
    with pytest.raises(BadRequest, match="at fps 0.0"):
        decode_request(
            encode_request(Video(torch.rand(2, 4, 3, 8, 8)), ["a", "b"], [{}, {}], "video").replace(
                b'"fps":"8.0"', b'"fps":"0.0"'
            ),
            "video",
            8,
        )
    reward = VideoFlowReward(direction=1.0, consistency=0.5)
    s = RewardServer(reward, name="video_flow", port=0).start()
    try:
        client = RemoteReward(f"http://127.0.0.1:{s.port}")
        assert client.heads == {"direction": 1.0, "consistency": 0.5}
        assert WeightedSum({"flow": (client, 1.0)}).advantage_terms() == {
            "flow/direction": 1.0,
            "flow/consistency": 0.5,
        }
        meta = [{"direction": "left"}, {"direction": "up"}]
        torch.testing.assert_close(
            client(video, ["a", "b"], meta).scores, reward(video, ["a", "b"], meta).scores
        )
    finally:
        s.close()


def _raw(port, data: bytes, timeout=5.0) -> int:
    """Send raw bytes, return the HTTP status of the answer (0 if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            head = sock.recv(64)
        except (TimeoutError, ConnectionResetError):
            return 0
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def _post(port, body: bytes) -> int:
    return _raw(
        port, b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


def test_server_survives_malformed_requests(server):
    port = server.port
    media, prompts, meta = digits_batch(4)
    good = encode_request(media, prompts, meta, "image")

    def with_header(tensors, **header):
        base = {"modality": "image", "prompts": json.dumps(prompts), "metadata": json.dumps(meta)}
        return st_save(tensors, metadata={**base, **header})

    bad_requests = {
        "unknown path": (b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        "no length": (b"POST /score HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        "huge length": (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
            413,
        ),
        "truncated body": (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + good[:10],
            400,
        ),
    }
    for name, (data, status) in bad_requests.items():
        assert _raw(port, data) == status, name
    bodies = {
        "json instead of safetensors": b'{"media": [1, 2, 3]}',
        "empty": b"",
        "header length lies": good[:8][::-1] + good[8:],
        "float64 media": with_header({"media": media.double()}),
        "wrong shape": with_header({"media": media[:, 0]}),
        "wrong modality": with_header({"media": media}, modality="speech"),
        "batch mismatch": with_header({"media": media[:3]}),
        "nan media": with_header({"media": media.masked_fill(media > 0.5, float("nan"))}),
        "prompts not strings": with_header({"media": media}, prompts=json.dumps([1, 2, 3, 4])),
        "metadata not json": with_header({"media": media}, metadata="{nope"),
        "groups wrong shape": with_header(
            {"media": media, "groups": torch.zeros(2, dtype=torch.int64)}
        ),
        "extra tensor": with_header({"media": media, "weights": torch.zeros(4)}),
        "too large a batch": st_save(
            {"media": torch.zeros(65, 1, 2, 2)},
            metadata={
                "modality": "image",
                "prompts": json.dumps(["x"] * 65),
                "metadata": json.dumps([{}] * 65),
            },
        ),
    }
    for name, body in bodies.items():
        assert _post(port, body) == 400, name
    g = torch.Generator().manual_seed(0)
    for n in range(40):  # random bytes, and random corruptions of a good request
        junk = torch.randint(0, 256, (int(torch.randint(1, 4000, (), generator=g)),), generator=g)
        corrupt = bytearray(good)
        for i in torch.randint(0, len(good), (8,), generator=g).tolist():
            corrupt[i] ^= 0xFF
        for body in (bytes(junk.to(torch.uint8).tolist()), bytes(corrupt)):
            # a corruption inside the pixel data still scores
            assert _post(port, body) in (200, 400), n
    boom = encode_request(media, ["boom"] + prompts[1:], meta, "image")
    assert _post(port, boom) == 500
    client = RemoteReward(f"http://127.0.0.1:{port}", deadline=5)
    assert client(media, prompts, meta).scores.shape == (4,)  # still serving
    with pytest.raises(
        RewardError, match="500.*fell over"
    ):  # a reward failure is not retried forever
        RemoteReward(f"http://127.0.0.1:{port}", deadline=1.5, backoff=0.2)(
            media, ["boom"] + prompts[1:], meta
        )


def test_client_checks_its_config_and_names_a_dead_server():
    with pytest.raises(ConfigError, match="reward.url"):
        RemoteReward("127.0.0.1:8765")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(RewardError, match="no answer within 1"):
        RemoteReward(f"http://127.0.0.1:{port}", deadline=1.0, backoff=0.2)
    assert time.monotonic() - start < 5


def _serve(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alignflow.sdk.cli",
            "serve-reward",
            "reward=digit_classifier",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert "serving reward" in line, line
    return proc


@pytest.mark.slow
def test_training_survives_a_reward_server_restart(tmp_path):
    from alignflow.sdk.trainer import Trainer
    from tests.helpers import digits_cfg

    with socket.socket() as s:  # a free port, reused by the restarted server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, restarted = _serve(port), {}
    try:
        cfg = digits_cfg(
            tmp_path,
            "~reward.digit",
            "+reward.remote.name=remote",
            f"+reward.remote.url=http://127.0.0.1:{port}",
            "+reward.remote.backoff=0.2",
            "+reward.remote.deadline=60",
        )
        tr = Trainer(cfg)
        client = tr.reward.terms["remote"][0]
        first = tr.train_iteration(0)
        proc.kill()
        proc.wait()
        threading.Timer(2.0, lambda: restarted.setdefault("proc", _serve(port))).start()
        second = tr.train_iteration(1)  # the rewards wait for the server to come back
        assert client.retries > 0
        assert torch.isfinite(
            torch.tensor([first["train/reward_mean"], second["train/reward_mean"]])
        ).all()
    finally:
        for p in (proc, restarted.get("proc")):
            if p is not None:
                p.kill()
