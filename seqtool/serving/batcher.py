"""Micro-batching: requests that arrive close together are decoded together.

One worker task takes the oldest request, then whatever else is waiting, until the batch holds
`batch_tokens` source tokens or `max_wait` seconds have passed since it began, and decodes the batch
in a thread (torch releases the GIL), so the event loop keeps reading requests meanwhile; those wait
for the next batch. Requests with equal settings share one length-sorted decoding pass
(LoadedModel.decode). The queue is bounded: when it is full a request is refused at once (the server
answers 429) rather than waiting without end. A request whose client has gone is dropped unless its
batch is already running.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from seqtool.api import DecodeRequest, LoadedModel, Translation


class QueueFull(Exception):
    """The queue holds its maximum of requests."""


@dataclass
class _Job:
    request: DecodeRequest
    done: asyncio.Future


class Batcher:
    def __init__(self, model: LoadedModel, *, batch_tokens: int, max_wait: float, max_queue: int):
        self.model, self.batch_tokens, self.max_wait = model, batch_tokens, max_wait
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.waiting = 0  # requests submitted whose batch has not started
        self.running = 0  # sentences in the batch being decoded
        self._held: _Job | None = None  # taken from the queue, over the last batch's budget

    def submit(self, request: DecodeRequest) -> asyncio.Future:
        """Queue a request; the future gets its translations. Cancelling it drops the request if its
        batch has not started. Raises QueueFull when the queue is full."""
        job = _Job(request, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        self.waiting += 1
        return job.done

    async def work(self) -> None:
        """The worker: runs until cancelled."""
        while True:
            collected = await self._collect()
            self.waiting -= len(collected)
            batch = [job for job in collected if not job.done.cancelled()]
            if not batch:
                continue
            self.running = sum(len(job.request.lines) for job in batch)
            try:
                results = await asyncio.to_thread(self.model.decode, [job.request for job in batch])
            except Exception as err:  # the requests fail, the server stays up
                _settle(batch, error=err)
            else:
                _settle(batch, results)
            finally:
                self.running = 0

    async def _collect(self) -> list[_Job]:
        """The oldest request, then those waiting or arriving within max_wait, up to the token budget
        (a request over the budget alone is a batch of its own)."""
        first, self._held = self._held or await self.queue.get(), None
        batch, tokens = [first], first.request.tokens
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while tokens < self.batch_tokens:
            job = await self._next(deadline)
            if job is None:
                break
            if tokens + job.request.tokens > self.batch_tokens:
                self._held = job
                break
            batch.append(job)
            tokens += job.request.tokens
        return batch

    async def _next(self, deadline: float) -> _Job | None:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
        try:
            return await asyncio.wait_for(self.queue.get(), left)
        except asyncio.TimeoutError:
            return None


def _settle(batch: list[_Job], results: list[list[Translation]] | None = None,
            error: BaseException | None = None) -> None:
    for i, job in enumerate(batch):
        if job.done.done():  # cancelled: its client went away while the batch ran
            continue
        if error is not None:
            job.done.set_exception(error)
        else:
            job.done.set_result(results[i])
