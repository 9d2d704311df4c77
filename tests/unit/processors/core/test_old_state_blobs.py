"""State persisted before the varint encodings (issue 16) still restores, field for field.

``old_state_blobs.json`` holds blobs written by the previous encoders, as a running deployment's changelog holds
them (KeyedState's 8-byte offset stamp, then ``to_bytes()``), with the state each decoded to then: latency and
TTFT slot sketches of one, two and more values, traffic counter vectors, and drift series (one filling its
references, one judged, with a rebaselined feature). Each must load to that state, keep its stamp, and write
itself again in the current format to the same state.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmpulse.processors.core.drift_monitor import FEATURES, DriftConfig, SeriesDrift
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.sketch import LatencySketch
from llmpulse.processors.core.traffic import CounterVector

CASES: list[dict[str, Any]] = json.loads((Path(__file__).with_name("old_state_blobs.json")).read_text())["cases"]


def _sketch_state(s: LatencySketch) -> dict[str, Any]:
    return {"count": s.count, "zero_count": s._zero_count, "sum": s._sum.hex(), "min": s._min.hex(),
            "max": s._max.hex(), "lo": s.store.lo, "counts": s.store.counts.tolist()}


def _sparse(counts: np.ndarray) -> dict[str, Any]:
    flat = np.asarray(counts).ravel()
    where = np.flatnonzero(flat)
    return {"size": int(flat.size), "where": where.tolist(), "values": flat[where].tolist()}


def _drift_state(s: SeriesDrift) -> dict[str, Any]:
    m = s.mean
    out: dict[str, Any] = {"mean": {
        "sizes": [m.baseline_size, m.current_size, m.min_current, m.recent_size, m.reference_end_ms],
        "welfords": [[w.count, float(w.mean).hex(), float(w.m2).hex()]
                     for w in (m._baseline, m._previous, m._block, m._recent_previous, m._recent)]}}
    for f in FEATURES:
        fd = s.features[f]
        v = fd.verdict
        out[f] = {"frozen": fd.frozen, "settled": fd.settled, "ring_pos": fd.ring_pos, "ring_fill": fd.ring_fill,
                  "natural": float(fd.natural).hex(), "rebaselined_at_ms": fd.rebaselined_at_ms,
                  "verdict": None if v is None else [v.reference, v.current, float(v.ks).hex(), float(v.ks_p).hex(),
                                                     float(v.psi).hex(), float(v.ks_needed).hex(), v.drifted],
                  "reference": _sparse(fd.reference), "ring": _sparse(fd.ring)}
    return out


def _state(namespace: str, item: Any) -> Any:
    if namespace in ("latency", "ttft"):
        return _sketch_state(item)
    if namespace == "traffic":
        return item.values.tolist()
    return _drift_state(item)


def _loader(namespace: str) -> Any:
    if namespace in ("latency", "ttft"):
        return LatencySketch.from_bytes
    if namespace == "traffic":
        return CounterVector.from_bytes
    config = DriftConfig()
    return lambda blob: SeriesDrift.from_bytes(blob, config)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['key'].split('/')[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_blob_of_the_previous_format_restores_to_its_state_and_rewrites_in_the_current_one(
        case: dict[str, Any]) -> None:
    namespace, _, key = case["key"].partition("/")
    blob = base64.b64decode(case["blob"])
    load = _loader(namespace)
    state: KeyedState[Any] = KeyedState(namespace, lambda _k: None, load)
    state.restore(key, blob)
    item = state.get(key)
    assert _state(namespace, item) == case["state"]
    assert state.for_update(key, case["offset"]) is None  # its stamp came back: a replayed record is skipped
    assert state.for_update(key, case["offset"] + 1) is item
    rewritten = dict(state.drain())[key]
    assert rewritten is not None and struct.unpack_from("<q", rewritten)[0] == case["offset"] + 1
    assert rewritten[8:12] != blob[8:12]  # the current format (its version byte or magic)
    assert _state(namespace, load(rewritten[8:])) == case["state"]
    few_values = namespace in ("latency", "ttft") and case["state"]["count"] <= 2  # those bytes are the values
    assert len(rewritten) == len(blob) if few_values else len(rewritten) < len(blob)
