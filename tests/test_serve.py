"""``fastrnn serve`` for real: a live server on a loopback port, driven by an HTTP client (httpx).

Seeded requests give ``fastrnn sample``'s text alone and in a batch, streamed or not; concurrent requests are
stepped together; every bad request is a 4xx with ``{"error": ...}`` and the server lives on; a client that
leaves mid-stream frees its place; SIGINT and SIGTERM stop it with 130 and 143; the page renders in headless
Chromium. The streams' batched step itself: :func:`test_a_stream_draws_the_same_alone_and_in_a_batch`.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastrnn import inference, kernels
from fastrnn._validate import check_model, inverse_temperature
from fastrnn.model import init_params
from fastrnn.streams import Stepper

from test_cli import fastrnn
from test_visualize import chromium

TEXT = 'ROMEO: "Peace (gentle) friar!"\nJULIET: 42 nights.\n'
MAX_LENGTH = 400_000


def httpx():
    """The httpx module: skip without it, fail under CI."""
    try:
        import httpx as module
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("httpx is missing: pip install '.[test]'")
        pytest.skip("httpx is missing: pip install '.[test]'")
    for name in ("starlette", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is missing: pip install '.[serve]'")
            pytest.skip(f"{name} is missing: pip install '.[serve]'")
    return module


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("rnn", 2), ("lstm", 2), ("gru", 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_stream_draws_the_same_alone_and_in_a_batch(cell, layers, dtype):
    """Six streams stepped together draw, each, what inference.sample draws for it alone."""
    params = check_model(init_params(30, 24, cell, layers, seed=1, dtype=dtype))
    params.flat[:] = (np.random.default_rng(5).normal(0, 0.8, params.flat.size) * (params.flat != 0)).astype(dtype)
    settings = [(s, 0.5 + 0.2 * s, (0, 5)[s % 2], (1.0, 0.9)[s // 2 % 2]) for s in range(6)]
    alone = [inference.sample(params, None, 3, 40, seed=s, temperature=t, top_k=k, top_p=p) for s, t, k, p in settings]
    stepper, B = Stepper(params), len(settings)
    stepper.step(np.empty((1, 30), dtype), np.array([7]), stepper.zero_state(1))  # the B=6 workspace shares its panels
    state, ids, logits = stepper.zero_state(B), np.full(B, 3, np.int64), np.empty((B, 30), dtype)
    rngs = [np.random.default_rng(s) for s, *_ in settings]
    options = (np.array([inverse_temperature(t, dtype) for _, t, _, _ in settings], dtype), np.zeros(B, bool),
               np.array([k for *_, k, _ in settings], np.int64), np.array([p for *_, p in settings]))
    drawn = np.empty((B, 40), np.int64)
    for t in range(40):
        stepper.step(logits, ids, state)
        kernels.draw_rows(ids, logits, np.array([r.random() for r in rngs]), *options)
        drawn[:, t] = ids
    for b in range(B):
        np.testing.assert_array_equal(drawn[b], alone[b])


# --- a live server ---------------------------------------------------------------------------------

class Server:
    def __init__(self, checkpoint, cwd, *flags):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "serve", str(checkpoint), "--port", "0",
                                      "--max-length", str(MAX_LENGTH), *map(str, flags)], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        found = re.search(r"on (http://\S+/)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"no address in {line!r}: {self.proc.stderr.read()}")
        self.url = found.group(1).rstrip("/")

    def stop(self, signum=signal.SIGTERM, timeout=30):
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "t.txt").write_text(TEXT * 80, encoding="utf-8")
    for name, flags in (("lstm", ["--model", "lstm", "--hidden-size", "24", "--batch-size", "4", "--seq-length", "16"]),
                        ("rnn", ["--hidden-size", "24"])):
        r = fastrnn("train", "t.txt", *flags, "--steps", 60, "--seed", 1, "--sample-every", 0,
                    "--checkpoint", f"{name}.npz", cwd=folder)
        assert r.returncode == 0, r.stderr
    return folder


@pytest.fixture(scope="module", params=["lstm", "rnn"])
def server(request, models):
    httpx()
    live = Server(f"{request.param}.npz", models)
    live.checkpoint, live.folder = f"{request.param}.npz", models
    yield live
    assert live.stop() == 143


def post(server, path, body, **kwargs):
    import httpx as client
    return client.post(server.url + path, content=body if isinstance(body, (str, bytes)) else json.dumps(body),
                       timeout=120, **kwargs)


def events(response) -> list:
    """``[(event, data), ...]`` of a server-sent event stream."""
    out = []
    for block in response.text.split("\n\n"):
        if block.strip():
            name = re.search(r"^event: (.*)$", block, re.M)
            data = json.loads(re.search(r"^data: (.*)$", block, re.M).group(1))
            out.append((name.group(1) if name else "message", data))
    return out


SAMPLES = [dict(prime="ROMEO:", length=120, temperature=0.8, seed=3),
           dict(length=90, seed=7, top_k=4),
           dict(prime="JULIET: ", length=60, temperature=1.3, top_p=0.8, seed=11),
           dict(prime="\"", length=1, seed=1)]


def sample_flags(body):
    flags = ["--length", body["length"], "--seed", body["seed"]]
    for name in ("prime", "temperature", "top_k", "top_p"):
        if name in body:
            flags += ["--" + name.replace("_", "-"), body[name]]
    return flags


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_seed_gives_fastrnn_samples_text(server, stream):
    for body in SAMPLES:
        r = post(server, "/v1/sample", dict(body, stream=stream))
        assert r.status_code == 200, r.text
        if stream:
            got = events(r)
            assert got[0] == ("message", {"text": body.get("prime", "")}) and got[-1][0] == "done"
            text = "".join(data["text"] for name, data in got if name == "message")
            assert got[-1][1] == {"length": body["length"]}
        else:
            text = r.json()["text"]
            assert r.json()["length"] == body["length"]
        cli = fastrnn("sample", server.checkpoint, *sample_flags(body), cwd=server.folder)
        assert cli.returncode == 0, cli.stderr
        assert text + "\n" == cli.stdout


def test_concurrent_requests_are_stepped_together_and_each_gets_its_own_text(server):
    bodies = [dict(length=300 + 10 * i, seed=100 + i, temperature=0.9) for i in range(12)]
    alone = [post(server, "/v1/sample", b).json()["text"] for b in bodies[:3]]
    results = [None] * len(bodies)

    def call(i):
        results[i] = post(server, "/v1/sample", dict(bodies[i], stream=i % 2 == 1))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = [r.json()["text"] if i % 2 == 0 else "".join(d["text"] for n, d in events(r) if n == "message")
             for i, r in enumerate(results)]
    assert texts[:3] == alone  # the same draws in a batch as alone
    assert [len(t) for t in texts] == [b["length"] for b in bodies]
    import httpx as client
    health = client.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["largest_batch"] > 1 and health["in_flight"] == 0


def test_score_model_and_visualize_say_what_the_cli_says(server):
    text = TEXT * 2
    r = post(server, "/v1/score", {"text": text, "per_char": True})
    assert r.status_code == 200, r.text
    (server.folder / "score.txt").write_text(text, encoding="utf-8")
    ev = fastrnn("eval", server.checkpoint, "score.txt", "--per-char", cwd=server.folder)
    rows = [line.split("\t") for line in ev.stdout.splitlines()[1:-1]]
    assert [f"{math.exp(lp):.6f}" for lp in r.json()["log_probs"]] == [row[2] for row in rows]
    assert f"{r.json()['nats_per_char']:.4f} nats/char" in ev.stdout and r.json()["count"] == len(text) - 1
    v = post(server, "/v1/visualize", {"text": text})
    assert v.status_code == 200 and v.json()["log_probs"] == r.json()["log_probs"] and v.json()["text"] == text
    import httpx as client
    m = client.get(server.url + "/v1/model").json()
    info = json.loads(fastrnn("info", server.checkpoint, "--json", cwd=server.folder).stdout)
    assert m["model"] == info["model"] and m["server"]["max_length"] == MAX_LENGTH


BAD = [
    ("/v1/sample", b"{\"length\": 5", 400, "malformed JSON"),
    ("/v1/sample", b"\xff\xfe", 400, "malformed JSON"),
    ("/v1/sample", [1, 2], 400, "must be a JSON object"),
    ("/v1/sample", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("/v1/score", b" " * (8 << 20) + b"{}", 413, "over the 8,388,608"),
    ("/v1/sample", {"length": 5, "colour": "red"}, 400, "unknown field 'colour'"),
    ("/v1/sample", {"prime": "ROMEO 日本", "length": 5}, 400, "not in the model's vocabulary"),
    ("/v1/sample", {"length": MAX_LENGTH + 1}, 413, "over this server's --max-length"),
    ("/v1/sample", {"length": 0}, 400, "length must be at least 1"),
    ("/v1/sample", {"length": "ten"}, 400, "length must be an integer"),
    ("/v1/sample", {"length": 5, "temperature": 0}, 400, "temperature must be positive"),
    ("/v1/sample", {"length": 5, "temperature": -1.5}, 400, "temperature must be positive"),
    ("/v1/sample", {"length": 5, "temperature": "hot"}, 400, "temperature must be a finite number"),
    ("/v1/sample", {"length": 5, "top_k": 0}, 400, "top_k must be at least 1"),
    ("/v1/sample", {"length": 5, "top_p": 1.5}, 400, "top_p must be in (0, 1]"),
    ("/v1/sample", {"length": 5, "seed": -3}, 400, "seed must be in"),
    ("/v1/sample", {"length": 5, "stream": "yes"}, 400, "stream must be true or false"),
    ("/v1/score", {}, 400, "text is required"),
    ("/v1/score", {"text": "R"}, 400, "at least 2 characters"),
    ("/v1/score", {"text": "ROMEO", "per_char": 1}, 400, "per_char must be true or false"),
    ("/v1/visualize", {"text": "R" * 20_001}, 413, "over the 20,000"),
    ("/v1/nothing", {}, 404, "no such path"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=[f"{i}-{b[3][:20]}" for i, b in enumerate(BAD)])
def test_a_bad_request_is_a_4xx_naming_the_problem(server, path, body, status, message):
    r = post(server, path, body)
    assert r.status_code == status and message in r.json()["error"], r.text
    import httpx as client
    assert client.get(server.url + "/v1/sample").status_code == 405
    assert client.get(server.url + "/healthz").json()["status"] == "ok"  # alive


def test_a_client_that_leaves_mid_stream_frees_its_place(server):
    import httpx as client
    with client.stream("POST", server.url + "/v1/sample", content=json.dumps({"length": MAX_LENGTH, "stream": True}),
                       timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["text"]:
                break  # a first piece of the text: now leave
    deadline = time.monotonic() + 20
    while client.get(server.url + "/healthz").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(server.url + "/healthz").json()["in_flight"] == 0


def test_the_page_samples_and_shows_a_text_in_headless_chromium(server, tmp_path):
    from html import unescape
    from urllib.parse import quote
    fragment = f"#prime=ROMEO:&length=80&seed=3&temperature=0.8&stream=0&sample&text={quote(TEXT)}"
    r = browse_url(f"{server.url}/{fragment}", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-shown="1"' in r.stdout, r.stdout[-3000:]
    spans = re.findall(r'<span data-i="(\d+)"', r.stdout)
    assert [int(i) for i in spans] == list(range(len(TEXT)))  # the view: one element per character
    drawn = re.search(r'<div id="sample-out">(.*?)</div>', r.stdout, re.S).group(1)
    want = post(server, "/v1/sample", {"prime": "ROMEO:", "length": 80, "seed": 3, "temperature": 0.8}).json()["text"]
    assert unescape(re.sub(r"<[^>]+>", "", drawn)) == want  # the page's sample is the API's
    shot = tmp_path / "page.png"
    r = browse_url(f"{server.url}/#text={quote(TEXT)}", f"--screenshot={shot}", "--window-size=1000,800")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0] > 20


def browse_url(url, *flags, timeout=120):
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-dev-shm-usage", "--virtual-time-budget=20000", *flags, url],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_it_cleanly(models, signum, status):
    httpx()
    live = Server("rnn.npz", models)
    import httpx as client
    assert client.get(live.url + "/healthz").status_code == 200
    assert live.stop(signum) == status
    assert "Traceback" not in live.proc.stderr.read()


def test_a_port_in_use_and_bad_flags_are_one_line_and_exit_2(models):
    httpx()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        for flags, message in ((["--port", port], "cannot listen on 127.0.0.1"), (["--port", 70000], "--port must be"),
                               (["--max-length", 0], "--max-length must be"), (["--host", "no.such.host.invalid"],
                                                                               "is not an address")):
            r = fastrnn("serve", "rnn.npz", *flags, cwd=models, timeout=60)
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        r = fastrnn("serve", "missing.npz", cwd=models, timeout=60)
        assert r.returncode == 2 and "does not exist" in r.stderr
    finally:
        taken.close()
