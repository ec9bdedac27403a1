"""Where and how predictions run: on the event loop, or batched on one model thread.

Measured with `make bench` on the default pipeline (about 2.5 ms per call whether it gets 1 row
or 100: nearly all of it is scikit-learn's per-call Python overhead, holding the GIL):
- on the loop, a lone request is cheapest, but under load every queued prediction runs before
  the loop reads another byte: at 32 connections p99 passed 1 s, and a /health probe waits
  behind the whole queue;
- on a pool of many threads, calls fight over the GIL and throughput drops by a third;
- on one model thread, the loop stays free to parse, validate and answer probes, and requests
  that arrive while the model is busy are predicted together in the next call. That costs a
  lone request nothing (it is never held back to wait for company) and multiplies throughput
  under load, since the per-call overhead is paid once per batch rather than once per request.

So a call estimated under INLINE_BUDGET_SECONDS stays on the loop (at once when its request is
the only one the server holds: nobody can join it, and waiting a turn of the loop for company
cost a one-row request ~5% of its latency at c=1); anything longer goes to the model thread,
except when the server is otherwise idle and the call is short: a lone request
estimated under LONE_BUDGET_SECONDS first lets the loop look for other arrivals, and if there
are none it runs on the loop too, sparing itself the two thread wake-ups (measured at 0.5 ms and
more on this 2-core machine). A longer call, lone or not, always leaves the loop free: a 100,000
row batch on the forest model held a /health probe for 0.84 s when it did not.

If a shared call fails, each request in it is retried on its own, so one faulty request fails
alone. The queue is bounded: past `max_queue` waiting requests the server is overloaded and says
so (503 with Retry-After) instead of letting latency grow without limit.

With the compiled graph (ONNX Runtime, one thread) a call costs about 0.15 ms for one row and
0.5 ms for a hundred, so nearly every call is under the inline budget and runs on the loop:
handing it to a thread would cost more than the call. The model thread and its batching still
pay for the scikit-learn runtime, and for very large batches on either.

Rows are independent in every estimator the training side builds, so a request's answer does
not depend on its batch companions (up to floating-point rounding in the last bits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from service import tracing
from service.errors import OverloadedError
from service.runtimes.base import Predictor, Table

# A call this short cannot delay a probe noticeably, whatever the load.
INLINE_BUDGET_SECONDS = 0.0005
# The longest a lone request may hold the loop (and so a probe) to spare the thread hand-off.
LONE_BUDGET_SECONDS = 0.005
RETRY_AFTER_SECONDS = 1

Output = np.ndarray[Any, Any]  # a slice of `Predictor.compute`'s answer: one row per input row
# With tracing on: the rows of the shared call each waiting request's answer came from.
_CALL_ROWS: dict[asyncio.Future[Output], int] = {}


class Dispatcher:
    def __init__(
        self,
        predictor: Predictor,
        max_rows_per_call: int,
        max_queue: int = 256,
        in_flight: Callable[[], int | None] = lambda: None,
    ) -> None:
        """`in_flight` counts the requests the server holds (None when it cannot tell)."""
        self.predictor = predictor
        self.in_flight = in_flight
        self.max_rows = max_rows_per_call
        self.max_queue = max_queue
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        # Touched only from the event loop, so no lock is needed.
        self._pending: list[tuple[Table, asyncio.Future[Output]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._claimed = False  # a lone request is checking whether it may run on the loop
        # Cheap calls that reach the dispatcher in the same turn of the loop, predicted together.
        self._inline: list[tuple[Table, asyncio.Future[Output]]] = []

    async def predict(self, table: Table) -> Output:
        """The model's raw answer for these rows, computed alone or together with others."""
        estimate = self.predictor.estimated_seconds(len(table))
        if estimate <= INLINE_BUDGET_SECONDS:
            if not self._inline and self.in_flight() == 1:
                tracing.annotate(model__call_rows=len(table))
                return self.predictor.compute(table)
            return await self._shared(self._on_the_loop(table), len(table))
        idle = not self._claimed and self._drainer is None and not self._pending
        if idle and estimate <= LONE_BUDGET_SECONDS:
            self._claimed = True
            try:
                # Two turns of the loop: one to read sockets, one for the requests found there
                # to reach this dispatcher. Anyone who did means load, so join the queue.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if self._drainer is None and not self._pending:
                    tracing.annotate(model__call_rows=len(table))
                    return self.predictor.compute(table)
            finally:
                self._claimed = False
        if len(self._pending) >= self.max_queue:
            raise OverloadedError(
                f"server overloaded: {len(self._pending)} requests are waiting for the model",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Output] = loop.create_future()
        self._pending.append((table, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await self._shared(future, len(table))

    async def _shared(self, future: asyncio.Future[Output], rows: int) -> Output:
        """The request's answer; with tracing on, the rows of the call it shared are noted on
        the current span."""
        try:
            return await future
        finally:
            if tracing.enabled():
                tracing.annotate(model__call_rows=_CALL_ROWS.pop(future, rows))

    def _on_the_loop(self, table: Table) -> asyncio.Future[Output]:
        """Join this turn's inline batch; the first request of the turn schedules its call.

        Requests read from sockets in the same turn of the loop all reach here before the
        scheduled callback runs, so under load they share one call (and its fixed cost), while a
        lone request waits for nothing but the callback.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Output] = loop.create_future()
        if not self._inline:
            loop.call_soon(self._run_inline)
        self._inline.append((table, future))
        return future

    def _run_inline(self) -> None:
        # One call holds the loop at most about LONE_BUDGET_SECONDS; the rest runs next turn.
        estimate = self.predictor.estimated_seconds
        taken = _prefix(self._inline, lambda rows: estimate(rows) <= LONE_BUDGET_SECONDS)
        batch, self._inline = self._inline[:taken], self._inline[taken:]
        if self._inline:
            asyncio.get_running_loop().call_soon(self._run_inline)
        if len(batch) == 1:
            self._settle_alone(*batch[0])
            return
        try:
            rows = Table.concat([table for table, _ in batch], self.predictor.kinds)
            results = self.predictor.compute(rows)
        except Exception:
            for table, future in batch:  # retried alone, so only a faulty request fails
                self._settle_alone(table, future)
            return
        _deliver(batch, results)

    def _settle_alone(self, table: Table, future: asyncio.Future[Output]) -> None:
        if future.done():
            return
        try:
            result = self.predictor.compute(table)
        except Exception as exc:
            _settle(future, error=exc)
        else:
            _settle(future, result=result)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._take_batch()
                try:
                    rows = Table.concat([table for table, _ in batch], self.predictor.kinds)
                    results = await loop.run_in_executor(self._thread, self.predictor.compute, rows)
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][1], error=exc)
                    else:
                        await self._one_by_one(batch)
                    continue
                _deliver(batch, results)
        finally:
            self._drainer = None

    async def _one_by_one(self, batch: list[tuple[Table, asyncio.Future[Output]]]) -> None:
        """A shared call failed: retry each request alone so only the faulty one fails."""
        loop = asyncio.get_running_loop()
        for table, future in batch:
            if future.done():
                continue
            try:
                result = await loop.run_in_executor(self._thread, self.predictor.compute, table)
            except Exception as exc:
                _settle(future, error=exc)
            else:
                _settle(future, result=result)

    def _take_batch(self) -> list[tuple[Table, asyncio.Future[Output]]]:
        """Every waiting request that fits under the row cap, and always at least one."""
        taken = _prefix(self._pending, lambda rows: rows <= self.max_rows)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def _prefix(waiting: list[tuple[Table, Any]], fits: Callable[[int], bool]) -> int:
    """How many requests, from the front, to predict in one call: always at least one, then as
    many as keep the total row count acceptable to `fits`."""
    taken, rows = 0, 0
    for table, _ in waiting:
        if taken and not fits(rows + len(table)):
            break
        taken += 1
        rows += len(table)
    return taken


def _deliver(batch: list[tuple[Table, asyncio.Future[Output]]], results: Output) -> None:
    """Hand each request its own slice of a shared call's predictions."""
    start = 0
    traced = tracing.enabled()
    for table, future in batch:
        end = start + len(table)
        if traced:
            _CALL_ROWS[future] = len(results)
        _settle(future, result=results[start:end])
        start = end


def _settle(
    future: asyncio.Future[Output],
    result: Output | None = None,
    error: Exception | None = None,
) -> None:
    if future.done():  # a client that went away leaves a cancelled future
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)
