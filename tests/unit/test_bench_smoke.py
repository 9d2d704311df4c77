"""The benchmark suite's pure parts run end to end on tiny inputs and report every figure as a number.

No timing is asserted anywhere: the machines are shared. What is checked is that each part produces its
keys, that the goals judge known values correctly, and that a partial run writes a complete report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import accuracy, batch_layout, detectors, inprocess, report, run
from bench.common import GroupResult, Scale, alternated_runs, alternating, percentile

TINY = Scale("smoke", calls=1_500, faust_records=10, sdk_calls=10, detector_calls=1_500, stability_s=None, rounds=1)


def _numbers(result: GroupResult, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = result.figures.get(key)
        assert isinstance(value, float) and math.isfinite(value), f"{key} = {value!r}"


def test_accuracy_keeps_its_one_percent_promise_on_the_trace() -> None:
    result = accuracy.run(limit=3_000)
    _numbers(result, ("percentile_rel_err_max", "percentile_rel_err_max_merged"))
    assert result.figures["percentile_rel_err_max"] <= 0.01


def test_detectors_report_costs_and_a_binned_ks_close_to_scipy() -> None:
    result = detectors.run(TINY)
    _numbers(result, ("guard_us_per_event", "drift_us_per_event", "ks_binned_us_per_test"))
    if "ks_stat_abs_diff_max" in result.figures:  # scipy present
        assert result.figures["ks_stat_abs_diff_max"] < 0.05


def test_inprocess_pipeline_reports_rates_and_overhead_ratios() -> None:
    result = inprocess.run(TINY)
    _numbers(result, ("inprocess_eps", "sketch_overhead_ratio", "metrics_overhead_ratio"))


def test_inprocess_pipeline_accepts_every_generated_call() -> None:
    from bench import dataset

    records = dataset.batch_records(dataset.realistic_rows(1_200))
    assert inprocess.Pipeline().feed([value for _, value, _ in records]) == 1_200


def test_held_ledgers_write_a_fraction_of_the_state_per_call_at_many_users() -> None:
    """One record a group, 2,000 users over 10 services: budget buckets and savings days rewritten after every
    group carry every user each time; held (here for the whole run) they are written once."""
    from bench import dataset
    from bench.cardinality import spread, state_written

    rows = spread(dataset.realistic_rows(2_000), series=40, users=2_000)
    records = [value for _, value, _ in dataset.batch_records(rows, per_record=20)]
    held, every_group, largest = state_written(records, held_s=math.inf)
    assert 0 < held < every_group / 4
    assert not any(ledger in largest for ledger in ("budget", "usage"))


def test_batch_layout_reports_all_three_layouts() -> None:
    result = batch_layout.run(TINY, repeats=2)
    _numbers(result, tuple(f"layout_{name}_us_per_call" for name in ("rowwise", "arrays", "packed")))


@pytest.mark.parametrize(("figures", "key", "expected"), [
    ({"worker_vs_decode": 0.49}, "worker_vs_decode", False),
    ({"worker_vs_decode": 0.5}, "worker_vs_decode", True),
    ({"alert_latency_p99_s": 1.2}, "alert_latency_p99_s", False),
    ({"rss_mb_warm": 100.0, "rss_mb_end": 109.0}, "rss_mb_end", True),
    ({"rss_mb_warm": 100.0, "rss_mb_end": 111.0}, "rss_mb_end", False),
    ({}, "throughput_drift_ratio", None),
])
def test_goals_judge_known_values(figures: dict[str, float], key: str, expected: bool | None) -> None:
    assert report.verdicts(figures)[key] is expected


def test_percentile_is_the_lower_order_statistic() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.99) == 1.0



def test_a_note_on_alternated_runs_names_their_count_and_every_run() -> None:
    values = iter([3.0, 1000.0, 2000.0, 4.0])
    samples = alternating({"a": lambda: next(values), "b": lambda: next(values)}, rounds=2)

    assert samples == {"a": [3.0, 4.0], "b": [1000.0, 2000.0]}  # the second round runs b first
    assert alternated_runs(samples) == "runs alternated, median of 2; runs (calls/s): a 3 / 4; b 1,000 / 2,000"


def test_partial_run_writes_every_required_key(tmp_path: Path) -> None:
    assert run.main(["--quick", "--only", "percentile_rel_err_max", "--out", str(tmp_path), "--no-profile"]) == 0

    payload = json.loads((tmp_path / "latest.json").read_text())
    assert set(report.REQUIRED) <= set(payload)
    assert isinstance(payload["percentile_rel_err_max"], float)
    assert payload["worker_eps"] is None  # not run, so not invented
    table = (tmp_path / "latest.md").read_text()
    assert "| `percentile_rel_err_max` |" in table and "pass" in table
