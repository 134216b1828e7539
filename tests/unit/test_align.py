"""Event-time alignment: whatever the poll chunking, records come out in timestamp order."""

from __future__ import annotations

import random

from stream.core.ordering import TimeAligner


def _sources(rng: random.Random) -> dict[str, list[tuple[float, str]]]:
    out = {}
    for name in ("tx-0", "tx-1", "labels-0", "labels-1"):
        t = 0.0
        records = []
        for i in range(rng.randint(0, 300)):
            t += rng.expovariate(1.0)
            records.append((t, f"{name}:{i}"))
        out[name] = records
    return out


def test_random_poll_chunks_come_out_in_timestamp_order() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        sources = _sources(rng)
        aligner: TimeAligner[tuple[float, str]] = TimeAligner(
            lambda r: r[0], max_wait_s=1e9, clock=lambda: 0.0)
        aligner.track(sources)
        cursor = dict.fromkeys(sources, 0)
        out: list[tuple[float, str]] = []
        while any(cursor[s] < len(sources[s]) for s in sources):
            name = rng.choice(list(sources))  # one poll returns a chunk of one partition
            take = rng.randint(1, 40)
            aligner.add(name, sources[name][cursor[name]:cursor[name] + take])
            cursor[name] = min(len(sources[name]), cursor[name] + take)
            done = {s for s in sources if cursor[s] == len(sources[s])}
            out.extend(aligner.release(caught_up=done))
        out.extend(aligner.drain())
        expected = sorted((r for rs in sources.values() for r in rs), key=lambda r: r[0])
        assert out == expected, seed
        assert len(aligner) == 0 and aligner.forced == 0


def test_an_empty_source_is_waited_for_only_max_wait() -> None:
    now = [0.0]
    aligner: TimeAligner[tuple[float, str]] = TimeAligner(
        lambda r: r[0], max_wait_s=2.0, clock=lambda: now[0])
    aligner.track(["tx", "labels"])
    aligner.add("tx", [(1.0, "a"), (2.0, "b")])
    assert aligner.release(caught_up=set()) == []
    now[0] = 2.5  # labels never answered: stop waiting
    assert aligner.release(caught_up=set()) == [(1.0, "a"), (2.0, "b")]
    # tx is now empty since 2.5: fresh data on labels waits for tx again
    aligner.add("labels", [(3.0, "l")])
    assert aligner.release(caught_up=set()) == []
    assert aligner.release(caught_up={"tx"}) == [(3.0, "l")]


def test_a_full_buffer_releases_the_oldest_instead_of_growing() -> None:
    aligner: TimeAligner[tuple[float, str]] = TimeAligner(
        lambda r: r[0], max_wait_s=1e9, max_buffered=3, clock=lambda: 0.0)
    aligner.track(["tx", "labels"])
    aligner.add("tx", [(float(i), str(i)) for i in range(5)])
    released = aligner.release(caught_up=set())
    assert released == [(0.0, "0"), (1.0, "1")] and len(aligner) == 3 and aligner.forced == 2


def test_untracked_sources_lose_their_buffers() -> None:
    aligner: TimeAligner[tuple[float, str]] = TimeAligner(lambda r: r[0], clock=lambda: 0.0)
    aligner.track(["a", "b"])
    aligner.add("b", [(1.0, "x")])
    aligner.track(["a"])
    assert len(aligner) == 0
    assert aligner.release(caught_up={"a"}) == []
