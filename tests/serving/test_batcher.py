"""The micro-batcher on its own, with a model that records its calls: requests waiting together are
decoded together up to the token budget, a request over the budget is a batch of its own, a
cancelled request is dropped, a failing batch fails its requests and the worker goes on."""

from __future__ import annotations

import asyncio

import pytest

from seqtool.api import DecodeRequest
from seqtool.recipe.schema import DecodeSpec
from seqtool.serving.batcher import Batcher, QueueFull


class Recorder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def decode(self, requests: list[DecodeRequest]) -> list[list[str]]:
        self.calls.append([r.lines[0] for r in requests])
        if any(r.lines[0] == "boom" for r in requests):
            raise RuntimeError("boom")
        return [[line.upper() for line in r.lines] for r in requests]


def request(name: str, tokens: int) -> DecodeRequest:
    return DecodeRequest([name], DecodeSpec(), tokens)


def test_batches_follow_the_token_budget_and_the_queue_bound():
    async def scenario():
        model = Recorder()
        batcher = Batcher(model, batch_tokens=100, max_wait=0.05, max_queue=5)
        futures = [batcher.submit(request(name, tokens)) for name, tokens in
                   [("a", 40), ("b", 40), ("c", 40), ("big", 500), ("d", 10)]]
        with pytest.raises(QueueFull):
            batcher.submit(request("e", 1))
        futures[2].cancel()
        worker = asyncio.create_task(batcher.work())
        results = await asyncio.gather(*(f for i, f in enumerate(futures) if i != 2))
        failing = batcher.submit(request("boom", 1))
        with pytest.raises(RuntimeError, match="boom"):
            await failing
        after = await batcher.submit(request("f", 1))
        worker.cancel()
        return model.calls, results, after

    calls, results, after = asyncio.run(scenario())
    # a+b fill 80 of 100; c (cancelled) is held over and dropped; big is alone; d follows
    assert calls == [["a", "b"], ["big"], ["d"], ["boom"], ["f"]]
    assert results == [["A"], ["B"], ["BIG"], ["D"]] and after == ["F"]
