"""Trace readers (Azure CSV, Mooncake JSONL, llm_call JSONL) and replaying a trace through the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmpulse.producers.simulation.simulator import TraceSource, simulate
from llmpulse.producers.simulation.trace_replay import (
    AZURE_CSV,
    LLM_CALL_JSONL,
    MOONCAKE_JSONL,
    detect_format,
    read_trace,
)
from llmpulse.producers.simulation.traffic_model import TrafficModel
from tests.support.clock import FakeClock
from tests.support.recording import RecordingPulse
from tests.support.shared_data import shared_data

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
not-a-time,1,2
2023-11-16 18:15:51.2224670,879
2023-11-16 18:15:51.3910170,-5,16

2023-11-16 18:15:52.0000000,91,16"""

MOONCAKE = """{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2]}
{"timestamp": 27, "input_length": 7322, "output_length": 490, "hash_ids": [0, 14]}
{"timestamp": 30, "input_length": "many", "output_length": 1}
[1, 2, 3]
{"timestamp": 31, "input_len
{"timestamp": 3536, "input_length": 100, "output_length": 7, "hash_ids": []}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_csv_rows_and_malformed_lines(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "a.csv", AZURE))
    assert trace.format == AZURE_CSV
    assert trace.skipped == 3  # bad time, missing column, negative tokens; the blank line is not a row
    assert trace.input_tokens == [374, 396, 91]
    assert trace.output_tokens == [44, 109, 16]
    assert trace.offsets_ms == pytest.approx([0.0, 4314.579, 5319.41], abs=1e-3)


def test_mooncake_jsonl_rows_and_malformed_lines(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "m.jsonl", MOONCAKE), keep_blocks=True)
    assert trace.format == MOONCAKE_JSONL
    assert trace.skipped == 3
    assert trace.offsets_ms == [0.0, 27.0, 3536.0]
    assert trace.input_tokens == [6758, 7322, 100]
    assert trace.prefix_blocks == [[0, 1, 2], [0, 14], []]
    assert trace.span_s == pytest.approx(3.536)


def test_llm_call_jsonl_is_sorted_and_needs_a_model(tmp_path: Path) -> None:
    rows = [
        {"timestamp_ms": 5_000, "provider": "openai", "request_model": "gpt-4o", "latency_ms": 10.0,
         "input_tokens": 3, "output_tokens": 4},
        {"timestamp_ms": 1_000, "provider": "openai", "request_model": "gpt-4o-mini", "latency_ms": 5.0},
        {"timestamp_ms": 2_000, "latency_ms": 5.0},  # no provider/model
    ]
    trace = read_trace(write(tmp_path, "c.jsonl", "\n".join(map(json.dumps, rows))))
    assert trace.format == LLM_CALL_JSONL
    assert trace.skipped == 1
    assert [c["request_model"] for c in trace.calls] == ["gpt-4o-mini", "gpt-4o"]
    assert trace.offsets_ms == [0.0, 4000.0]
    assert trace.input_tokens == [0, 3]


def test_limit_and_unknown_formats(tmp_path: Path) -> None:
    assert len(read_trace(write(tmp_path, "m.jsonl", MOONCAKE), limit=2)) == 2
    with pytest.raises(ValueError, match="not an Azure CSV"):
        detect_format(write(tmp_path, "x.txt", "hello,world\n1,2\n"))


@pytest.mark.parametrize(
    ("name", "rows", "kind"),
    [
        ("AzureLLMInferenceTrace_code.csv", 8_819, AZURE_CSV),
        ("AzureLLMInferenceTrace_conv.csv", 19_366, AZURE_CSV),
        ("conversation_trace.jsonl", 12_031, MOONCAKE_JSONL),
    ],
)
def test_real_traces_parse_completely(name: str, rows: int, kind: str) -> None:
    trace = read_trace(shared_data("traces", name))
    assert (len(trace), trace.skipped, trace.format) == (rows, 0, kind)
    assert 55 * 60 < trace.span_s < 60 * 60  # about an hour each


def test_replay_keeps_trace_arrivals_and_tokens(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "m.jsonl", MOONCAKE))
    model = TrafficModel.load()
    source = TraceSource(trace, model, np.random.default_rng(1), speedup=2.0)
    recorder, clock = RecordingPulse(), FakeClock()
    summary = simulate(recorder, model, duration_s=None, clock=clock, source=source)
    assert summary.recorded == 3
    start = recorder.calls[0]["timestamp_ms"]
    assert [c["timestamp_ms"] - start for c in recorder.calls] == [0, 14, 1768]  # offsets halved
    for call, tokens in zip(recorder.calls, trace.input_tokens, strict=True):
        assert call["input_tokens"] == (0 if call["cache_hit"] else tokens)
    assert clock.t - 1_700_000_000.0 == pytest.approx(1.77, abs=0.11)  # real time, sped up


def test_replay_of_llm_calls_retimes_them_only(tmp_path: Path) -> None:
    rows = [{"timestamp_ms": 1_000 * i, "provider": "openai", "request_model": "gpt-4o", "latency_ms": 7.0,
             "service": "recorded", "status": "ok"} for i in range(5)]
    trace = read_trace(write(tmp_path, "c.jsonl", "\n".join(map(json.dumps, rows))))
    recorder = RecordingPulse()
    source = TraceSource(trace, TrafficModel.load(), np.random.default_rng(1))
    summary = simulate(recorder, duration_s=2.5, clock=FakeClock(), source=source, fast=True)
    assert summary.recorded == 3  # --duration cuts the replay short
    assert [c["service"] for c in recorder.calls] == ["recorded"] * 3
    assert recorder.calls[1]["timestamp_ms"] - recorder.calls[0]["timestamp_ms"] == 1_000
