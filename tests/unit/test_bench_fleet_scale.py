"""The pure parts of the fleet-scale benchmarks (issue #16): rates from fleet-summary stamps, when a worker group
has settled on its partitions, the alert p99 when incidents raised no alert, and how a run reports what it could
not measure. Nothing here times anything."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import alert_latency, dataset, run, workerproc
from bench.alert_latency import Probe, p99_or_reason
from bench.common import GroupResult, summarized_rate
from bench.scaleout import BatchCpu, cpu_figures, settled
from bench.traffic import SummaryProgress


def _summary(stamp_ms: int, partition: int, offset: int) -> SimpleNamespace:
    value = json.dumps({"p": partition, "o": offset, "spend": [], "outcomes": [], "alerts": []}).encode()
    return SimpleNamespace(value=lambda: value, timestamp=lambda: (1, stamp_ms))


def test_rate_from_summaries_leaves_out_the_first_run() -> None:
    # Runs of 2, 1 and 3 records of 100 calls, done at 0, 1 and 2 s: the first stamp is the end of the first run.
    progress = SummaryProgress()
    for stamp, offset in ((0, 1), (1_000, 2), (2_000, 5)):
        progress.handle(_summary(stamp, 0, offset), 0.0)
    assert progress.records() == 6
    assert summarized_rate(progress.runs, calls_per_record=100) == pytest.approx(200.0)


def test_summaries_of_two_partitions_count_apart_and_replays_count_nothing() -> None:
    progress = SummaryProgress()
    for stamp, partition, offset in ((0, 0, 3), (500, 1, 0), (900, 0, 3), (1_000, 0, 2), (2_000, 1, 4)):
        progress.handle(_summary(stamp, partition, offset), 0.0)
    assert progress.records() == 4 + 5
    assert progress.records(since=1) == 5
    assert progress.span_s() == pytest.approx(2.0)


def test_rate_does_not_depend_on_arrival_order() -> None:
    # Two workers stamp the same fleet topic; their summaries interleave.
    runs = [(1_000, 1), (0, 1), (3_000, 1), (2_000, 1)]
    assert summarized_rate(runs, 100) == summarized_rate(sorted(runs), 100) == pytest.approx(100.0)


def test_rate_needs_two_summaries() -> None:
    assert math.isnan(summarized_rate([(1_000, 5)], calls_per_record=100))


@pytest.mark.parametrize(("held", "expected"), [
    ([{0, 1}, {2, 3}], True),
    ([{0, 1, 2, 3}], True),
    ([{0, 1, 2, 3}, set()], False),  # the second worker has not got partitions yet
    ([{0, 1}, {1, 2, 3}], False),  # partition 1 still on both: the rebalance is not over
    ([{0}, {1, 2}], False),  # nobody processes partition 3
])
def test_a_group_has_settled_when_every_worker_holds_its_own_partitions(held: list[set[int]], expected: bool) -> None:
    assert settled(held, 4) is expected


def test_alert_p99_is_the_largest_but_one_of_twenty() -> None:
    latencies = [0.1 * k for k in range(1, 21)]
    value, _note = p99_or_reason(Probe(latencies, 20, 0, 1_000.0))
    assert value == pytest.approx(1.9)


def test_an_incident_without_an_alert_counts_as_the_slowest() -> None:
    latencies = [0.1 * k for k in range(1, 20)]  # 19 of 20 alerted
    value, _note = p99_or_reason(Probe(latencies, 20, 0, 1_000.0))
    assert value == pytest.approx(1.9)  # the p99's rank now falls on the slowest alerted one


def test_alert_p99_is_not_measured_when_it_falls_on_missing_alerts() -> None:
    value, note = p99_or_reason(Probe([0.2] * 18, 20, 0, 1_000.0))
    assert value is None
    assert "2 of 20" in note and f"{alert_latency.SETTLE_S:.0f} s" in note


def _live(drained: float) -> alert_latency.LiveMax:
    return alert_latency.LiveMax(drained, 1.25 * drained, 1_000.0)


def test_the_80pct_latency_is_the_median_round_with_each_rounds_live_maximum_in_the_note() -> None:
    probes = [Probe([seconds] * 20, 20, 0, 40_000.0) for seconds in (0.3, 2.5, 0.4)]
    result = GroupResult()
    alert_latency._put_rounds(result, "_80pct", [_live(50_000), _live(41_000), _live(52_000)], probes)
    assert result.figures["alert_latency_p99_s_80pct"] == pytest.approx(0.4)
    assert result.figures["alert_latency_p50_s_80pct"] == pytest.approx(0.4)
    assert "live max 41,000 calls/s" in result.notes["alert_latency_p99_s_80pct"]
    assert result.figures["alert_incidents_missed_80pct"] == 0


def test_an_unmeasured_round_counts_as_the_slowest_and_a_median_on_one_is_not_measured() -> None:
    missing = Probe([0.2] * 10, 20, 0, 40_000.0)  # half the incidents raised no alert: no p99
    result = GroupResult()
    alert_latency._put_rounds(result, "_80pct", [_live(5e4)] * 3, [Probe([0.3] * 20, 20, 0, 4e4), missing,
                                                                    Probe([0.6] * 20, 20, 0, 4e4)])
    assert result.figures["alert_latency_p99_s_80pct"] == pytest.approx(0.6)
    result = GroupResult()
    alert_latency._put_rounds(result, "_80pct", [_live(5e4)] * 3, [missing, missing, Probe([0.3] * 20, 20, 0, 4e4)])
    assert result.figures["alert_latency_p99_s_80pct"] is None
    assert result.notes["alert_latency_p99_s_80pct"].startswith("not measured")
    assert result.figures["alert_incidents_missed_80pct"] == 20


@pytest.mark.parametrize(("key", "group"), [
    ("cardinality_ratio", "worker_cardinality"),
    ("worker_eps_10k_series", "worker_cardinality"),
    ("inprocess_eps_10k_series", "cardinality"),
    ("scaleout_ratio_2_workers", "scaleout"),
    ("alert_latency_p99_s_80pct", "alerts"),
    ("prom_histogram_rel_err_max_tuned", "accuracy"),
])
def test_only_a_figure_runs_the_group_that_measures_it(key: str, group: str) -> None:
    assert run.group_of(key) == group


def test_a_fleet_figure_without_a_broker_fails_the_run_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dataset, "broker_up", lambda _bootstrap, timeout=5.0: False)

    assert run.main(["--quick", "--only", "scaleout", "--only", "worker_cardinality", "--out", str(tmp_path),
                     "--no-profile"]) == 1

    payload = json.loads((tmp_path / "latest.json").read_text())
    for key in ("scaleout_ratio_2_workers", "cardinality_ratio", "worker_eps_100_series"):
        assert payload[key] is None
        assert "no Kafka broker" in payload["notes"][key]
    err = capsys.readouterr().err
    assert "not measured: scaleout_ratio_2_workers" in err and "not measured: cardinality_ratio" in err


def test_asking_for_a_broker_where_none_listens_says_no_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    """``make bench`` asks first and starts its own broker on a no: a newcomer's first run must not open with pages
    of client connection errors."""
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert not dataset.broker_up(f"127.0.0.1:{port}", timeout=2.0)

    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_scaleout_cpu_figures_tell_the_cost_of_splitting_from_the_cores_the_machine_gave() -> None:
    """Two workers that spend per call what one does (efficiency 1.0) but get 1.5 cores where one got 1.0 scale by
    1.5: the figures say which of the two limits the ratio."""
    # 2 s of processing on 1 core, then 1.33 s on 1.5 cores
    one = [BatchCpu(calls=100_000, rate=50_000.0, workers_s=2.0, others_s=0.4, preempted=400)]
    two = [BatchCpu(calls=100_000, rate=75_000.0, workers_s=2.0, others_s=0.6, preempted=3000)]
    result = GroupResult()

    cpu_figures(result, {"1": one, "2": two}, cores=2)

    assert result.figures["scaleout_cpu_us_per_call_1_worker"] == pytest.approx(20.0)
    assert result.figures["scaleout_cpu_efficiency_2_workers"] == pytest.approx(1.0)
    assert result.figures["scaleout_worker_cores_1_worker"] == pytest.approx(1.0)
    assert result.figures["scaleout_worker_cores_2_workers"] == pytest.approx(1.5)
    assert "4.0 us a call beside one worker and 6.0 beside two" in result.notes["scaleout_worker_cores_2_workers"]
    efficiency_note = result.notes["scaleout_cpu_efficiency_2_workers"]
    assert "200 times a second of processing alone and 2,250 as two" in efficiency_note


def test_scaleout_cpu_figures_are_not_measured_without_proc() -> None:
    result = GroupResult()

    cpu_figures(result, {"1": [], "2": []}, cores=2)

    assert result.figures["scaleout_cpu_efficiency_2_workers"] is None
    assert "no /proc" in result.notes["scaleout_cpu_efficiency_2_workers"]


def test_a_worker_process_cpu_preemptions_and_rss_are_read_from_proc_and_none_without_a_process() -> None:
    running = SimpleNamespace(process=SimpleNamespace(pid=os.getpid()))
    sum(i * i for i in range(200_000))  # some CPU time of our own

    assert workerproc.cpu_seconds(running) > 0  # type: ignore[arg-type,operator]
    assert workerproc.preemptions(running) >= 0  # type: ignore[arg-type,operator]
    assert workerproc.rss_mb(running) > 1  # type: ignore[arg-type,operator]
    assert workerproc.machine_busy_seconds() > 0  # type: ignore[operator]
    idle = SimpleNamespace(process=None)
    assert workerproc.cpu_seconds(idle) is None and workerproc.preemptions(idle) is None  # type: ignore[arg-type]
    assert workerproc.rss_mb(idle) is None  # type: ignore[arg-type]
