"""`translate` answers a line piped in before the next is sent; `serve`, a real process, answers the
request in flight when SIGTERM comes, then exits 0."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

import seqtool
from seqtool.commands.translate import run_translate
from tests.serving.conftest import LINES

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_translate_answers_each_line_before_the_next_is_sent(run_dir, monkeypatch):
    """A writer that sends one line and waits for its answer before sending the next, through real
    pipes on translate's stdin and stdout (in a thread of this process: no interpreter to start)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(stdin_r, "r"))
    monkeypatch.setattr(sys, "stdout", os.fdopen(stdout_w, "w"))
    errors = []

    def translate():
        try:
            run_translate([run_dir], None, None, {}, device="cpu", seed=1, warn=errors.append)
        except BaseException as err:
            errors.append(err)
        finally:
            sys.stdout.close()

    thread = threading.Thread(target=translate, daemon=True)
    thread.start()
    answers = []
    with os.fdopen(stdin_w, "w") as writer, os.fdopen(stdout_r, "r") as reader:
        for line in LINES:
            writer.write(line + "\n")
            writer.flush()
            assert select.select([reader], [], [], 60)[0], f"no answer to {line!r} within 60 s ({errors})"
            answers.append(reader.readline().rstrip("\n"))
        writer.close()
        thread.join(60)
        assert reader.read() == "" and not errors
    assert answers == [t.text for t in seqtool.load(run_dir, device="cpu").translate(LINES)]


def test_sigterm_drains_the_request_in_flight(run_dir, tmp_path):
    """The request is held in flight by a long micro-batch wait (1.5 s) when SIGTERM comes."""
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "seqtool", "serve", "-c", str(run_dir), "--port", "0",
                                    "--max-wait-ms", "1500", "--device", "cpu"], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=err)
    try:
        url = _announced(log, process)
        assert url.startswith("http://127.0.0.1:")  # local only unless told otherwise
        answer = {}
        thread = threading.Thread(target=lambda: answer.update(response=httpx.post(
            url + "/translate", json={"sentences": LINES}, timeout=120)))
        thread.start()
        while httpx.get(url + "/health").json()["waiting"] == 0:
            assert thread.is_alive(), "the request ended before SIGTERM could be sent"
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        thread.join(120)
        assert answer["response"].status_code == 200
        expected = [t.text for t in seqtool.load(run_dir, device="cpu").translate(LINES)]
        assert [t["text"] for t in answer["response"].json()["translations"]] == expected
        assert process.wait(60) == 0
        assert log.read_text().rstrip().endswith("seqtool: stopped")
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health")
    finally:
        process.kill()


def _announced(log, process, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"serving .* on (http://\S+)", log.read_text())
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"no address announced: {log.read_text()}")
