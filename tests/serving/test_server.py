"""`seqtool serve`'s app on a real uvicorn server (a thread, on a free local port) and a real HTTP
client: answers equal `translate`'s under 8 concurrent clients, bad requests get clean JSON errors
and the server stays up, a full queue answers 429."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

import seqtool
from seqtool.cli import app
from seqtool.serving.app import Limits
from seqtool.serving.server import address, bind, server
from tests.serving.conftest import LINES

LIMITS = Limits(max_body=1 << 16, max_sentences=32, max_queue=16)


@pytest.fixture(scope="module")
def model(run_dir):
    return seqtool.load(run_dir, device="cpu")


@contextlib.contextmanager
def running(model, limits: Limits):
    sock = bind("127.0.0.1", 0)
    uv = server(model, limits, access_log=False)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield address(sock)
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def url(model):
    with running(model, LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def expected(run_dir, tmp_path_factory) -> dict[str, list]:
    """Every line's n-best list (beam 3, n-best 2) as `seqtool translate` prints it."""
    root = tmp_path_factory.mktemp("translate")
    (root / "in.txt").write_text("".join(line + "\n" for line in LINES))
    result = CliRunner().invoke(app, ["translate", "-c", str(run_dir), "-i", str(root / "in.txt"),
                                      "-o", str(root / "out.txt"), "--n-best", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    nbest = {line: [] for line in LINES}
    for row in (root / "out.txt").read_text().splitlines():
        number, text, score = row.split(" ||| ")
        nbest[LINES[int(number)]].append([text, score])
    return nbest


def test_eight_concurrent_clients_get_what_translate_gives(url, model, expected, monkeypatch):
    calls = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda requests: calls.append(len(requests)) or decode(requests))

    def client(seed: int) -> list[tuple[list[str], dict]]:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as http:
            answers = []
            for _ in range(6):
                lines = rng.sample(LINES, rng.randint(1, len(LINES)))
                response = http.post("/translate", json={"sentences": lines, "n_best": 2})
                assert response.status_code == 200, response.text
                answers.append((lines, response.json()))
            return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for client_answers in pool.map(client, range(8)) for a in client_answers]
    assert len(answers) == 48
    for lines, body in answers:
        for line, translation in zip(lines, body["translations"], strict=True):
            got = [[n["text"], f"{n['score']:.4f}"] for n in translation["nbest"]]
            assert got == expected[line] and translation["text"] == got[0][0]
    assert sum(calls) == 48 and len(calls) < 48  # requests that arrived together were decoded together
    with httpx.Client(base_url=url, timeout=60) as http:
        body = {"sentences": ["1 2", "3"], "alignment": True, "constraints": [["hundred"], []]}
        first, second = http.post("/translate", json=body).json()["translations"]
    assert "hundred" in first["text"].split() and first["alignment"] and "alignment" in second


def test_bad_requests_get_clean_errors_and_the_server_stays_up(url):
    errors = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    big = b'{"sentences": ["' + b"1 " * (5 << 20) + b'"]}'  # 10 MB
    cases = [
        (b'{"sentences": ["1 2"', 400, "not JSON: Expecting"),
        (b'{"sentences": ["\xff\xfe"]}', 400, "not UTF-8 (byte 16)"),
        (b"[1, 2]", 400, "valid dictionary"),
        (b'{"sentences": []}', 400, "sentences: List should have at least 1 item"),
        (b'{"sentences": [1]}', 400, "sentences.0: Input should be a valid string"),
        (b'{"sentences": ["1"], "beem": 2}', 400, "decode.beem: unknown key; did you mean 'decode.beam'?"),
        (b'{"sentences": ["1"], "beam": 500}', 400, "decode.beam: Input should be less than or equal to 128"),
        (b'{"sentences": ["1"], "batch_tokens": 9}', 400, "batch_tokens: set by the server"),
        (b'{"sentences": ["1"], "constraints": [["one"], ["two"]]}', 400, "constraints: one list of phrases"),
        (json.dumps({"sentences": ["1"] * 33}).encode(), 413, "33 sentences; at most 32"),
        (big, 413, f"request body of {len(big)} bytes; at most 65536"),
    ]
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            for body, status, message in cases:
                response = http.post("/translate", content=body)
                assert (response.status_code, message in response.json()["error"]) == (status, True), response.text
            chunked = http.post("/translate", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]))
            assert chunked.status_code == 413 and "request body over 65536 bytes" in chunked.json()["error"]
            assert http.get("/translate").status_code == 405 and http.get("/nowhere").json() == {"error": "Not Found"}
            _disconnect_mid_body(url)
            _disconnect_while_decoding(url)
            assert http.get("/health").json()["status"] == "ok"
            assert http.post("/translate", json={"sentences": ["4 0 5"]}).status_code == 200
            info = http.get("/info").json()
            assert info["model"]["arch"] == "rnn_seq2seq" and info["recipe"] == "tiny"
            assert info["tokenizer"]["kind"] == "word" and info["server"]["max_sentences"] == 32
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert not errors, [record.getMessage() for record in errors]


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _disconnect_mid_body(url: str) -> None:
    with _raw(url) as conn:
        conn.sendall(b'POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"sentences": ["1')


def _disconnect_while_decoding(url: str) -> None:
    body = json.dumps({"sentences": ["9 8 7 6 5 4 3 2 1"] * 32, "beam": 8}).encode()
    with _raw(url) as conn:
        conn.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_a_full_queue_answers_429(model, monkeypatch):
    release = threading.Event()
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda requests: release.wait(30) and decode(requests))
    with running(model, Limits(max_queue=1)) as url, ThreadPoolExecutor(2) as pool:
        def post():
            return httpx.post(url + "/translate", json={"sentences": ["1 2"]}, timeout=60)

        first = pool.submit(post)  # taken by the worker, which blocks
        while httpx.get(url + "/health").json()["running"] == 0:
            time.sleep(0.01)
        second = pool.submit(post)  # waits in the queue
        while httpx.get(url + "/health").json()["waiting"] == 0:
            time.sleep(0.01)
        refused = post()
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        release.set()
        assert first.result().status_code == second.result().status_code == 200
