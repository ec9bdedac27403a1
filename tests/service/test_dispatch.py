"""The dispatcher: lone requests on the loop, concurrent ones batched on the model thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from service.dispatch import Dispatcher
from service.errors import OverloadedError
from service.runtimes.base import Kinds, Table


class SlowModel:
    """Stands in for Predictor: echoes each row's id, records every call and its thread.

    It raises on every call with `fail`, and on any call holding the row id `poison`.
    """

    def __init__(self, seconds: float, fail: bool = False, poison: int | None = None) -> None:
        self.kinds = Kinds([("id", False)])  # one column, not text
        self.seconds = seconds
        self.fail = fail
        self.poison = poison
        self.calls: list[tuple[int, str]] = []

    def estimated_seconds(self, rows: int) -> float:
        return self.seconds

    def compute(self, table: Table) -> list[dict[str, Any]]:
        # A list slices like the real array, and its items read better in assertions.
        ids = table.columns["id"]
        self.calls.append((len(ids), threading.current_thread().name))
        time.sleep(self.seconds)
        if self.fail or self.poison in ids:
            raise RuntimeError("model exploded")
        return [{"value": i} for i in ids]


def rows(*ids: int) -> Table:
    return Table({"id": list(ids)}, len(ids))


def dispatcher(model: SlowModel, max_rows: int = 1000) -> Dispatcher:
    return Dispatcher(model, max_rows_per_call=max_rows)  # type: ignore[arg-type]


def test_a_lone_short_request_runs_on_the_loop() -> None:
    model = SlowModel(0.002)
    answer = asyncio.run(dispatcher(model).predict(rows(1, 2)))
    assert answer == [{"value": 1}, {"value": 2}]
    assert model.calls == [(2, threading.main_thread().name)]


def test_concurrent_requests_are_batched_and_answered_in_order() -> None:
    model = SlowModel(0.05)
    dispatch = dispatcher(model)

    async def main() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(dispatch.predict(rows(i, i + 100)) for i in range(20)))

    answers = asyncio.run(main())
    assert answers == [[{"value": i}, {"value": i + 100}] for i in range(20)]
    assert sum(n for n, _ in model.calls) == 40
    assert len(model.calls) < 20
    assert all(name.startswith("model") for _, name in model.calls)
    dispatch.close()


def test_a_turns_inline_batch_holds_the_loop_at_most_the_lone_budget() -> None:
    model = SlowModel(0.0001)
    model.estimated_seconds = lambda rows: 0.0001 + 0.0004 * rows  # type: ignore[method-assign]
    dispatch = dispatcher(model)

    async def main() -> list[Any]:
        return await asyncio.gather(*(dispatch.predict(rows(i)) for i in range(30)))

    answers = asyncio.run(main())
    assert answers == [[{"value": i}] for i in range(30)]
    assert [n for n, _ in model.calls] == [12, 12, 6]  # 12 rows: 4.9 ms; 13 rows: over 5 ms


def test_one_faulty_request_fails_alone_when_batched_on_the_loop() -> None:
    dispatch = dispatcher(SlowModel(0.0001, poison=2))

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(dispatch.predict(rows(i)) for i in range(4)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert isinstance(results[2], RuntimeError)
    assert [results[i] for i in (0, 1, 3)] == [[{"value": 0}], [{"value": 1}], [{"value": 3}]]


def test_batches_respect_the_row_cap() -> None:
    model = SlowModel(0.02)
    dispatch = dispatcher(model, max_rows=5)

    async def main() -> None:
        await asyncio.gather(*(dispatch.predict(rows(1, 2)) for _ in range(10)))

    asyncio.run(main())
    assert max(n for n, _ in model.calls) <= 5
    dispatch.close()


def test_the_loop_stays_responsive_while_the_model_works() -> None:
    model = SlowModel(0.3)
    dispatch = dispatcher(model)

    async def main() -> float:
        work = [asyncio.ensure_future(dispatch.predict(rows(i))) for i in range(3)]
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.sleep(0.01)  # what a health check needs: one turn of the loop
        lag = time.perf_counter() - started
        await asyncio.gather(*work)
        return lag

    assert asyncio.run(main()) < 0.1
    dispatch.close()


def test_a_lone_long_request_leaves_the_loop_free() -> None:
    model = SlowModel(0.3)
    dispatch = dispatcher(model)

    async def main() -> float:
        work = asyncio.ensure_future(dispatch.predict(rows(1)))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await asyncio.sleep(0)  # a probe's turn of the loop
        lag = time.perf_counter() - started
        assert await work == [{"value": 1}]
        return lag

    assert asyncio.run(main()) < 0.1
    assert [name for _, name in model.calls] == ["model_0"]
    dispatch.close()


def test_one_faulty_request_fails_alone_when_batched() -> None:
    model = SlowModel(0.02, poison=3)
    dispatch = dispatcher(model)

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(dispatch.predict(rows(i)) for i in range(6)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert isinstance(results[3], RuntimeError)
    assert [r for i, r in enumerate(results) if i != 3] == [[{"value": i}] for i in (0, 1, 2, 4, 5)]
    assert any(n > 1 for n, _ in model.calls)  # they were batched before the retry
    dispatch.close()


def test_a_full_queue_answers_overloaded_with_retry_after() -> None:
    dispatch = Dispatcher(SlowModel(0.05), max_rows_per_call=1, max_queue=3)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(dispatch.predict(rows(i)) for i in range(8)), return_exceptions=True
        )

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert refused
    assert all(r.headers == {"Retry-After": "1"} for r in refused)
    assert [r for r in results if not isinstance(r, Exception)] == [
        [{"value": i}] for i in range(8) if not isinstance(results[i], Exception)
    ]
    assert len(refused) < 8
    dispatch.close()


def test_a_failing_model_fails_every_waiting_request() -> None:
    dispatch = dispatcher(SlowModel(0.02, fail=True))

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(dispatch.predict(rows(i)) for i in range(4)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    dispatch.close()


def test_cheap_models_always_run_inline() -> None:
    model = SlowModel(0.0001)
    dispatch = dispatcher(model)

    async def main() -> None:
        await asyncio.gather(*(dispatch.predict(rows(i)) for i in range(5)))

    asyncio.run(main())
    assert {name for _, name in model.calls} == {threading.main_thread().name}
    assert model.calls == [(5, threading.main_thread().name)]  # one call for the turn's five


@pytest.mark.parametrize("count", [1, 7])
def test_batched_answers_match_the_real_model(penguins_store: Any, count: int) -> None:
    from modelstore import ModelStore
    from service.runtimes.sklearn import SklearnPredictor

    store = ModelStore(penguins_store)
    loaded = store.load(store.resolve())
    predictor = SklearnPredictor(loaded.metadata, loaded.estimator)
    example = dict(predictor.metadata.example)
    variants = [{**example, "bill_length_mm": 35.0 + 2 * i} for i in range(count)]
    dispatch = Dispatcher(predictor, max_rows_per_call=1000)

    async def main() -> list[Any]:
        kinds = predictor.kinds
        return await asyncio.gather(
            *(dispatch.predict(Table.from_instances([v], kinds)) for v in variants)
        )

    answers = [predictor.shape(output) for output in asyncio.run(main())]
    for variant, answer in zip(variants, answers, strict=True):
        (alone,) = predictor.predict([variant])
        assert answer[0]["label"] == alone["label"]
        for key, p in alone["probabilities"].items():
            assert answer[0]["probabilities"][key] == pytest.approx(p, rel=1e-12, abs=1e-15)
    dispatch.close()


def test_requests_that_cannot_share_a_call_are_answered_one_by_one() -> None:
    """Joining the queued requests failed (one lacks a column): the drainer must not die with
    every request waiting; each is run alone, and only the faulty one fails."""
    model = SlowModel(0.02)
    dispatch = dispatcher(model)

    async def main() -> list[Any]:
        broken = Table({"other": [7]}, 1)
        calls = [dispatch.predict(rows(1)), dispatch.predict(broken), dispatch.predict(rows(2))]
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)

    first, failed, last = asyncio.run(main())
    assert first == [{"value": 1}]
    assert isinstance(failed, KeyError)
    assert last == [{"value": 2}]
    dispatch.close()


@pytest.mark.parametrize(("in_flight", "waits"), [(1, False), (3, True), (None, True)])
def test_a_request_alone_in_the_server_does_not_wait_a_turn_for_company(
    in_flight: int | None, waits: bool
) -> None:
    """Alone (the server holds one request): computed at once. With others in flight, or when
    the server cannot tell, it waits for the turn's other arrivals, to share their call."""

    async def scenario() -> tuple[bool, list[tuple[int, str]]]:
        model = SlowModel(0.0)
        dispatch = Dispatcher(
            model,  # type: ignore[arg-type]
            max_rows_per_call=1000,
            in_flight=lambda: in_flight,
        )
        turned: list[bool] = []
        asyncio.get_running_loop().call_soon(turned.append, True)  # runs on the next turn
        assert await dispatch.predict(rows(7)) == [{"value": 7}]
        return bool(turned), model.calls

    turned, calls = asyncio.run(scenario())
    assert turned is waits
    assert calls == [(1, threading.main_thread().name)]
