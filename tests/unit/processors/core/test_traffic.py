"""TrafficMonitor's token_average rule: INFO at seed 004's 500-token limit, WARNING only at a limit the user set."""

from __future__ import annotations

import os

import numpy as np
import pytest

from llmpulse.processors.configure import engine_config
from llmpulse.processors.core.traffic import TrafficConfig, TrafficMonitor
from llmpulse.processors.settings import ProcessorSettings

NOW = 1_700_000_000_000
SERIES = "\x1f".join(("chat", "gpt-4o", "openai"))


def token_average(config: TrafficConfig, tokens_per_call: int, calls: int = 60) -> tuple[str | None, float, float]:
    """(severity, observed, threshold) of token_average after ``calls`` calls of ``tokens_per_call`` tokens."""
    monitor = TrafficMonitor(config)
    counts = {"requests": np.ones(calls, dtype=np.int64), "tokens": np.full(calls, tokens_per_call)}
    monitor.update([SERIES], np.zeros(calls, dtype=np.int64), np.full(calls, NOW - 1_000), counts, 0, NOW)
    (obs,) = [o for o in monitor.observe(SERIES, NOW) if o.rule == "token_average"]
    return obs.severity, obs.observed, obs.threshold


@pytest.mark.parametrize("tokens", [1_000, 12_000, 97_000])
def test_realistic_traffic_over_the_seed_limit_is_informational_by_default(tokens: int) -> None:
    assert token_average(TrafficConfig(), tokens) == ("INFO", tokens, 500.0)


def test_under_the_seed_limit_or_too_few_calls_is_clear() -> None:
    assert token_average(TrafficConfig(), 400)[0] is None
    assert token_average(TrafficConfig(), 5_000, calls=10)[0] is None  # below min_requests


def test_warning_only_above_an_explicit_limit() -> None:
    config = TrafficConfig(token_average_warning=20_000)
    assert token_average(config, 12_000) == ("INFO", 12_000, 500.0)
    assert token_average(config, 25_000) == ("WARNING", 25_000, 20_000.0)


def test_zero_turns_a_level_off() -> None:
    assert token_average(TrafficConfig(token_average_warning=0), 50_000)[0] == "INFO"
    assert token_average(TrafficConfig(token_average_limit=0), 50_000)[0] is None
    assert token_average(TrafficConfig(token_average_limit=0, token_average_warning=20_000), 50_000)[0] == "WARNING"


def test_settings_reach_the_core_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("LLMPULSE_")]:
        monkeypatch.delenv(name)
    default = engine_config(ProcessorSettings()).traffic
    assert (default.token_average_limit, default.token_average_warning) == (500, None)
    monkeypatch.setenv("LLMPULSE_TRAFFIC__TOKEN_AVERAGE_WARNING", "20000")
    assert engine_config(ProcessorSettings()).traffic.token_average_warning == 20_000


def error_rate(failed: int, calls: int) -> str | None:
    monitor = TrafficMonitor(TrafficConfig())
    counts = {"requests": np.ones(calls, dtype=np.int64), "errors": np.arange(calls) < failed}
    monitor.update([SERIES], np.zeros(calls, dtype=np.int64), np.full(calls, NOW - 1_000), counts, 0, NOW)
    (obs,) = [o for o in monitor.observe(SERIES, NOW) if o.rule == "error_rate"]
    return obs.severity


def test_an_error_ratio_at_the_threshold_is_noise_and_a_burst_is_not() -> None:
    # 100 calls: a series failing at exactly 5 % shows up to 13 failures by chance (binomial, alpha 0.001)
    assert error_rate(6, 100) is None
    assert error_rate(13, 100) is None
    assert error_rate(14, 100) == "WARNING"
    assert error_rate(30, 100) == "CRITICAL"
    assert error_rate(60, 1000) is None and error_rate(200, 1000) == "CRITICAL"


def _minutes(monitor: TrafficMonitor, start_s: int, minutes: int, calls: int, failed: int, column: str) -> None:
    """``calls`` calls a minute for ``minutes`` minutes from ``start_s`` before NOW, ``failed`` of them flagged."""
    for m in range(minutes):
        at = NOW - (start_s - 60 * m) * 1000 + np.linspace(0, 59_000, calls).astype(np.int64)
        counts = {"requests": np.ones(calls, dtype=np.int64), column: np.arange(calls) >= calls - failed}
        monitor.update([SERIES], np.zeros(calls, dtype=np.int64), at, counts, 0, NOW)


def _severity(monitor: TrafficMonitor, rule: str) -> str | None:
    (obs,) = [o for o in monitor.observe(SERIES, NOW) if o.rule == rule]
    return obs.severity


def test_an_error_burst_that_stopped_clears_in_a_minute_though_the_window_still_remembers_it() -> None:
    monitor = TrafficMonitor(TrafficConfig())
    _minutes(monitor, 300, 3, 100, 30, "errors")  # 30% failing for three minutes ...
    _minutes(monitor, 120, 2, 100, 0, "errors")  # ... then two clean minutes: 18% over the 5-minute window
    assert _severity(monitor, "error_rate") is None


def test_a_sharp_onset_fires_from_the_last_minute_before_the_window_would() -> None:
    monitor = TrafficMonitor(TrafficConfig())
    _minutes(monitor, 300, 4, 200, 0, "errors")  # four clean minutes of 200 calls ...
    _minutes(monitor, 60, 1, 100, 30, "errors")  # ... then 30% failing: 3.3% over 5 minutes, 30% over the last one
    assert _severity(monitor, "error_rate") == "CRITICAL"


def test_a_count_rule_clears_once_the_last_minute_is_quiet() -> None:
    monitor = TrafficMonitor(TrafficConfig())
    _minutes(monitor, 300, 2, 10, 4, "hallucination")
    assert _severity(monitor, "hallucination") is None  # 8 in the window, none in the last minute
    _minutes(monitor, 60, 1, 10, 1, "hallucination")
    assert _severity(monitor, "hallucination") == "WARNING"


def test_counter_vectors_persist_sparse_and_the_raw_first_format_is_still_read() -> None:
    from llmpulse.processors.core.traffic import COLUMNS, CounterVector

    values = np.zeros(len(COLUMNS), dtype=np.int64)
    values[[0, 7, 8, 9]] = [1, 1_500, 1, 700]  # one priced call
    blob = CounterVector(values).to_bytes()
    assert len(blob) <= 24 and len(blob) % 8  # never a multiple of 8: that length is the first format's
    np.testing.assert_array_equal(CounterVector.from_bytes(blob).values, values)
    np.testing.assert_array_equal(CounterVector.from_bytes(values.astype("<i8").tobytes()).values, values)
    older = CounterVector.from_bytes(values[:14].astype("<i8").tobytes())  # before "denied" was appended
    np.testing.assert_array_equal(older.values, np.r_[values[:14], 0])
