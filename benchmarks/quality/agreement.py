"""Does the Kafka-backed run agree with the in-process one? The rule `make quality` applies.

Both score the same records in the same event-time order, so they agree on every score, unless
the live scorer gave up a wait that the replay never has to make (`max_task_idle_ms` for the
alignment of its partitions, `merchant_max_wait_ms` for the shared merchant table): a machine
too slow for those bounds. Only then is a small ROC AUC difference tolerated.
"""

from __future__ import annotations

from typing import Any

KAFKA_TOLERANCE_AUC = 0.005


def kafka_agreement(diff: float, equal: int, total: int, unaligned: float,
                    merchant_timeouts: float) -> dict[str, Any]:
    """Whether the live run agrees with the in-process one. A scorer that reports no timed-out
    wait must give every score exactly (anything else is a determinism bug); one that gave up
    waiting (a machine too slow for `max_task_idle_ms` or `merchant_max_wait_ms`) is held to
    the ROC AUC tolerance, and the report names why it departed.

    >>> kafka_agreement(0.0, 10, 10, 0, 0)["agrees"], kafka_agreement(0.0, 9, 10, 0, 0)["agrees"]
    (True, False)
    >>> kafka_agreement(0.004, 9, 10, 310, 0)["agrees"]
    True
    """
    exact = equal == total
    timed_out = unaligned > 0 or merchant_timeouts > 0
    return {"roc_auc_difference": diff, "tolerance": KAFKA_TOLERANCE_AUC,
            "agrees": exact or (timed_out and diff <= KAFKA_TOLERANCE_AUC),
            "scores_equal": equal, "exact": exact, "unaligned_records": int(unaligned),
            "merchant_wait_timeouts": int(merchant_timeouts)}


def disagreement(check: dict[str, Any]) -> str:
    """Why `make quality` fails on the Kafka check, in one line.

    >>> line = disagreement({"roc_auc_difference": 0.0, "scores_equal": 5, "exact": False,
    ...                      "unaligned_records": 0, "merchant_wait_timeouts": 0})
    >>> line.startswith("error: kafka_p4 departs from online_p4"), line[-17:]
    (True, 'a determinism bug')
    """
    if check["unaligned_records"] or check["merchant_wait_timeouts"]:
        return (f"error: kafka_p4 disagrees with online_p4 by {check['roc_auc_difference']:.4f}"
                f" ROC AUC (> {KAFKA_TOLERANCE_AUC}); the scorer released "
                f"{check['unaligned_records']} records out of assured order and gave up "
                f"{check['merchant_wait_timeouts']} merchant waits: a machine too slow for "
                "max_task_idle_ms / merchant_max_wait_ms")
    return (f"error: kafka_p4 departs from online_p4 ({check['scores_equal']} scores equal, "
            f"ROC AUC difference {check['roc_auc_difference']:.4f}) with no timed-out wait to "
            "explain it: a determinism bug")
