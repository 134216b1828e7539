"""`keep_stable_offsets`: the last stable offset kafka-python's Fetcher drops, kept per
partition as the fetch responses are parsed (no broker here; the broker-side contract is
test_kafka_adapters.py's `test_an_end_held_by_a_transaction_moves_on_when_it_commits`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream.kafka.kafkapython_consumer import keep_stable_offsets


def response(tp: str, lso: int | None, error_code: int = 0) -> Any:
    data = SimpleNamespace(error_code=error_code)
    if lso is not None:
        data.last_stable_offset = lso
    return SimpleNamespace(topic_partition=tp, partition_data=data)


def test_the_highest_lso_of_error_free_responses_is_kept_and_every_response_still_parsed() -> None:
    parsed: list[Any] = []

    def parse(completed: Any) -> int:
        parsed.append(completed)
        return len(parsed)

    fetcher = SimpleNamespace(_parse_fetched_data=parse)
    stable = keep_stable_offsets(fetcher)
    responses = [response("a", 5), response("b", 2), response("a", 3),  # older: not back
                 response("a", 9, error_code=1),  # an error: not the broker's LSO
                 response("b", -1), response("b", None)]  # none sent
    results = [fetcher._parse_fetched_data(r) for r in responses]
    assert stable == {"a": 5, "b": 2}
    assert parsed == responses and results == [1, 2, 3, 4, 5, 6]
    stable.clear()  # an assignment forgets them; the next response counts again
    fetcher._parse_fetched_data(response("a", 4))
    assert stable == {"a": 4}
