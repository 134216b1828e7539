"""The core's cost in instructions, which this noisy 2-vCPU VM cannot blur: `Pipeline.score`
over the first `--score` of `--events` synthetic bench events (the bench's traffic: seed 7,
10,000 cards, 8 partitions by the producer's key hash), in process, no Kafka.

Timings of the same code move by 20% between runs here; an instruction count does not. Run
it twice under callgrind, with a small and a large `--score`, and divide the difference by the
events between them (docs/benchmark.md, "The learning step and the epoch copies"):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.core_cost --score 2000      # then --score 12000

Both runs make the same events and the same imports, so the difference is the scoring alone.
It also prints a digest of the scores: a change meant to be bit for bit keeps it.

>>> main(["--events", "40", "--score", "30"])  # doctest: +ELLIPSIS
scored 30 of 40 events; scores ...
"""

from __future__ import annotations

import argparse
import hashlib
import struct

import orjson

from benchmarks.bench.harness import traffic
from stream.assembly import merchant_partitions, model_version, pipeline_config
from stream.config import load_settings
from stream.contracts.codec import decode_transaction
from stream.contracts.partitioning import partition_for
from stream.core.pipeline import Pipeline

PARTITIONS = 8


def score_events(events: int, score: int, seed: int = 7, cards: int = 10_000) -> str:
    """Score the first `score` of `events` bench events; the hex digest of their scores."""
    values = [(orjson.dumps(event), partition_for(event["card_id"].encode(), PARTITIONS))
              for event in traffic(events, cards, seed)]
    settings = load_settings(environ={})
    pipeline = Pipeline(pipeline_config(settings), model_version(settings),
                        merchant_partitions=merchant_partitions(settings, PARTITIONS))
    digest = hashlib.sha256()
    for value, partition in values[:score]:
        digest.update(struct.pack("d", pipeline.score(decode_transaction(value), partition).score))
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=12_000, help="events made (both runs alike)")
    p.add_argument("--score", type=int, required=True, help="how many of them to score")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if not 0 <= args.score <= args.events:
        p.error("--score must be between 0 and --events")
    print(f"scored {args.score} of {args.events} events; scores "
          f"{score_events(args.events, args.score, args.seed)}")


if __name__ == "__main__":
    main()
