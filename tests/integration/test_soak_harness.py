"""The soak harness itself (benchmarks/soak, `make soak`), in one minute on each client: a
scorer process SIGKILLed and restarted under steady traffic with duplicates and poison
records, every input answered exactly once (read_committed), the lag recovered and the
scorer's memory sampled. The 30-minute run with a broker restart is `make soak` (README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak.run import SoakConfig, soak


def test_one_minute_of_soak_with_a_scorer_restart(tmp_path: Path, kafka_client: str) -> None:
    config = SoakConfig(minutes=1.0, rate=200.0, broker_restarts=0, kills=1,
                        kafka_client=kafka_client, sample_s=5.0, drain_timeout_s=180.0)
    report = soak(config, work_dir=tmp_path)
    accounting = report["accounting"]
    print({k: v for k, v in report.items() if k != "samples"})
    assert accounting["lost"] == 0 and accounting["duplicated"] == 0, accounting["examples"]
    assert accounting["inconsistent_duplicates"] == 0
    # The traffic really carried what the accounting is about.
    assert accounting["inputs"] >= 0.8 * 60 * config.rate
    assert accounting["poison_inputs"] > 0 and accounting["duplicate_inputs"] > 0
    assert accounting["dead_letters"] == accounting["poison_inputs"]
    assert accounting["verdicts"] == accounting["inputs"] - accounting["poison_inputs"]
    [fault] = report["faults"]
    assert fault["kind"] == "scorer_kill" and fault["recovered_after_s"] is not None
    assert report["lag_drained_after_s"] is not None and report["scorer_exit_code"] == 0
    processes = report["rss"]["processes"]
    assert len(processes) == 2 and all(p["peak_mib"] > 50 for p in processes)
    assert report["ok"]
