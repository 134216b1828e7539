"""`make soak`: a long run of the scorer on a real broker, with faults (README "Soak test").

    python -m benchmarks.soak --minutes 30 --rate 400 [--broker-restarts 1] [--kills 1]
        [--kafka-client librdkafka|kafka-python] [--out soak-results.json] [--keep DIR]

Prints a summary and writes the full report (every sample included) as JSON; exits 1 when
an input was lost or answered twice, the lag did not recover, or the scorer did not stop
cleanly at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson

from benchmarks.soak.run import SoakConfig, soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=400.0, help="input records per second")
    parser.add_argument("--broker-restarts", type=int, default=1)
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs of the scorer")
    parser.add_argument("--kafka-client", default="librdkafka",
                        choices=("librdkafka", "kafka-python"))
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("soak-results.json"))
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="work in DIR and keep it: the scorers' logs (scorer-N.log, what "
                             "each rebuild and restore took) and the broker's data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("kafka", "rdkafka", "stream.kafka"):  # the harness's own clients: quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    config = SoakConfig(minutes=args.minutes, rate=args.rate,
                        broker_restarts=args.broker_restarts, kills=args.kills,
                        kafka_client=args.kafka_client, partitions=args.partitions,
                        sample_s=args.sample_s)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    report = soak(config, args.keep)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    brief = {k: v for k, v in report.items() if k != "samples"}
    print(orjson.dumps(brief, option=orjson.OPT_INDENT_2).decode())
    print(f"full report: {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
