"""LatencySketch keeps its 1 % promise against exact order statistics, merges, serializes, stays small."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from llmpulse.processors.core.counter_bytes import decode_counts, encode_counts
from llmpulse.processors.core.sketch import LatencySketch, add_groups
from tests.support.shared_data import shared_data

ACCURACY = 0.01
TOLERANCE = ACCURACY + 1e-12  # float rounding at bucket boundaries only
QS = np.concatenate([np.linspace(0.0, 1.0, 101), [0.001, 0.005, 0.995, 0.999, 0.9999]])


def _dataset(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    makers = {
        "lognormal_narrow": lambda: rng.lognormal(6.0, 0.5, n),
        "lognormal_wide": lambda: rng.lognormal(0.0, 3.0, n),
        "exponential": lambda: rng.exponential(250.0, n),
        "uniform": lambda: rng.uniform(100.0, 200.0, n),
        "pareto": lambda: (rng.pareto(1.2, n) + 1.0) * 50.0,
        "bimodal": lambda: np.where(rng.random(n) < 0.8, rng.normal(120, 10, n), rng.normal(4000, 300, n)),
        "constant": lambda: np.full(n, 42.0),
        "integer_ms": lambda: np.round(rng.gamma(2.0, 300.0, n)) + 1.0,
        "tiny": lambda: rng.lognormal(np.log(1e-7), 1.0, n),
        "huge": lambda: rng.lognormal(np.log(1e12), 1.0, n),
    }
    return np.abs(makers[name]()) + 1e-300  # strictly positive: the sketch's accuracy domain


def _assert_accurate(sketch: LatencySketch, values: np.ndarray, qs: np.ndarray = QS) -> None:
    exact = np.quantile(values, qs, method="lower")
    estimate = sketch.quantiles(qs)
    rel = np.abs(estimate - exact) / exact
    worst = int(np.argmax(rel))
    assert rel[worst] <= TOLERANCE, f"q={qs[worst]}: estimate {estimate[worst]} vs exact {exact[worst]}"


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 100_000])
@pytest.mark.parametrize(
    "name",
    ["lognormal_narrow", "lognormal_wide", "exponential", "uniform", "pareto", "bimodal", "constant",
     "integer_ms", "tiny", "huge"],
)
def test_quantiles_within_relative_accuracy(name: str, n: int) -> None:
    values = _dataset(name, n, np.random.default_rng(n))
    sketch = LatencySketch(ACCURACY)
    for chunk in np.array_split(values, max(1, n // 500)):  # batches, as the worker feeds it
        sketch.add_many(chunk)
    assert sketch.count == n
    _assert_accurate(sketch, values)


def test_quantiles_on_latencies_from_real_token_counts() -> None:
    trace = shared_data("traces", "AzureLLMInferenceTrace_conv.csv")
    tokens = np.loadtxt(trace, delimiter=",", skiprows=1, usecols=(1, 2))
    # A plausible serving-time model: fixed overhead + prefill per input token + decode per output token (s).
    latency_s = 0.25 + 0.00015 * tokens[:, 0] + 0.021 * tokens[:, 1]
    sketch = LatencySketch()
    for chunk in np.array_split(latency_s, 40):
        sketch.add_many(chunk)
    _assert_accurate(sketch, latency_s)
    assert sketch.sum == pytest.approx(latency_s.sum())


def test_empty_sketch_and_invalid_quantiles_are_nan() -> None:
    sketch = LatencySketch()
    assert math.isnan(sketch.quantile(0.5))
    assert sketch.count == 0 and math.isnan(sketch.min)
    sketch.add_many(np.array([1.0, 2.0]))
    assert np.isnan(sketch.quantiles([-0.1, 1.1, np.nan])).all()


def test_nan_and_infinity_are_ignored() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.array([np.nan, 5.0, np.inf, -np.inf, 10.0]))
    assert sketch.count == 2
    assert sketch.sum == 15.0
    assert sketch.quantile(1.0) == 10.0


def test_zero_and_negative_values_count_in_zero_bucket() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.array([0.0, 0.0, 0.0, 10.0, 20.0]))
    assert sketch.quantile(0.25) == 0.0  # rank 1 is one of the zeros
    assert sketch.quantile(0.75) == pytest.approx(10.0, rel=ACCURACY)
    assert sketch.quantile(1.0) == 20.0  # extremes are exact


def test_many_small_batches_equal_one_batch() -> None:
    values = np.random.default_rng(3).lognormal(3, 1, 300)
    in_pieces, batch = LatencySketch(), LatencySketch()
    for piece in np.array_split(values, 97):  # the store grows at both ends, piece by piece
        in_pieces.add_many(piece)
    batch.add_many(values)
    np.testing.assert_array_equal(in_pieces.quantiles(QS), batch.quantiles(QS))
    assert in_pieces.to_bytes() == batch.to_bytes()


def test_adding_groups_at_once_equals_add_many_per_group() -> None:
    """``add_groups`` (a monitor's batch: one group per series and slot) leaves every sketch exactly as ``add_many``
    of its own values would, bytes and all: zeros and negatives, groups holding infinities or NaN, sketches that
    already hold values, one of another accuracy, and groups whose sketch is None (a replayed record)."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 9, 60)
    values = rng.lognormal(-0.5, 1.2, int(sizes.sum()))
    values[rng.choice(values.size, 12, replace=False)] = 0.0
    values[rng.choice(values.size, 5, replace=False)] = -0.25
    values[rng.choice(values.size, 4, replace=False)] = math.inf
    values[rng.choice(values.size, 3, replace=False)] = math.nan
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edges = [*starts.tolist(), values.size]

    def fresh(g: int) -> LatencySketch | None:
        if g % 7 == 3:
            return None
        sketch = LatencySketch(0.02 if g == 5 else 0.01)
        if g % 4 == 0:
            sketch.add_many(np.array([0.3, 1.7, 12.0]))
        return sketch

    grouped, one_by_one = [fresh(g) for g in range(sizes.size)], [fresh(g) for g in range(sizes.size)]
    add_groups(grouped, values, starts)
    for g, sketch in enumerate(one_by_one):
        if sketch is not None:
            sketch.add_many(values[edges[g] : edges[g + 1]])
    assert [s is None or s.to_bytes() for s in grouped] == [s is None or s.to_bytes() for s in one_by_one]
    assert [s is None or (s.count, s.sum, s.min, s.max) for s in grouped] == [
        s is None or (s.count, s.sum, s.min, s.max) for s in one_by_one]
    assert sum(s is not None and s.count > 3 for s in grouped) > 20  # the groups were filled


def test_new_sketches_filled_together_equal_add_many_per_group() -> None:
    """Empty sketches (new slots) take their counters from one count over all their groups: the same bytes as
    ``add_many``, for groups of one to 40 values, stores too narrow for their group's range (they collapse), and
    empty sketches beside filled ones."""
    rng = np.random.default_rng(21)
    sizes = rng.integers(1, 41, 80)
    values = rng.lognormal(0.0, 2.0, int(sizes.sum()))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edges = [*starts.tolist(), values.size]

    def fresh(g: int) -> LatencySketch:
        sketch = LatencySketch(max_buckets=3 if g % 5 == 1 else 2048)
        if g % 6 == 0:
            sketch.add_many(np.array([0.02, 40.0]))
        return sketch

    grouped, one_by_one = [fresh(g) for g in range(sizes.size)], [fresh(g) for g in range(sizes.size)]
    add_groups(grouped, values, starts)
    for g, sketch in enumerate(one_by_one):
        sketch.add_many(values[edges[g] : edges[g + 1]])
    assert [s.to_bytes() for s in grouped] == [s.to_bytes() for s in one_by_one]
    assert [s.num_buckets for s in grouped] == [s.num_buckets for s in one_by_one]
    assert min(s.num_buckets for s in grouped if s.store.max_buckets == 3) == 3  # (they collapsed)


def test_merge_equals_sketch_of_union() -> None:
    rng = np.random.default_rng(11)
    a, b, c = rng.lognormal(2, 1, 5000), rng.lognormal(6, 0.3, 3000), rng.exponential(1.0, 100)
    parts = []
    for values in (a, b, c):
        s = LatencySketch()
        s.add_many(values)
        parts.append(s)
    union = LatencySketch()
    union.add_many(np.concatenate([a, b, c]))
    merged = parts[0].copy()
    merged.merge(parts[1])
    merged.merge(parts[2])
    all_at_once = LatencySketch.merge_all(parts)
    for s in (merged, all_at_once):
        assert s.count == union.count
        assert s.sum == pytest.approx(union.sum)
        np.testing.assert_array_equal(s.quantiles(QS), union.quantiles(QS))
    assert parts[0].count == a.size  # copy() left the original alone


def test_merge_rejects_different_accuracy() -> None:
    with pytest.raises(ValueError):
        LatencySketch(0.01).merge(LatencySketch(0.02))


def test_serialization_round_trips_and_is_compact() -> None:
    values = np.random.default_rng(5).lognormal(5, 1, 100_000)
    sketch = LatencySketch()
    sketch.add_many(np.concatenate([values, [0.0]]))
    blob = sketch.to_bytes()
    restored = LatencySketch.from_bytes(blob)
    assert restored.count == sketch.count and restored.sum == sketch.sum
    assert (restored.min, restored.max) == (sketch.min, sketch.max)
    np.testing.assert_array_equal(restored.quantiles(QS), sketch.quantiles(QS))
    # Used range only, counters in the narrowest width: a few bytes per bucket plus a fixed header.
    assert len(blob) <= 2 * sketch.num_buckets + 80
    restored.add_many(values)  # a restored sketch keeps working
    assert restored.count == 2 * sketch.count - 1


def test_sparse_sketch_serializes_about_a_bit_per_empty_bucket() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.array([1.0, 10.0, 100.0, 1000.0, 10_000.0]))  # 5 values over ~460 buckets
    assert sketch.num_buckets > 450
    # 64 B of configuration and totals, then length, bitmap, and 5 one-byte counts with their header.
    assert len(sketch.to_bytes()) <= 64 + 4 + sketch.num_buckets // 8 + 1 + 5 + 5
    restored = LatencySketch.from_bytes(sketch.to_bytes())
    np.testing.assert_array_equal(restored.quantiles(QS), sketch.quantiles(QS))


def test_from_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        LatencySketch.from_bytes(b"nope")
    with pytest.raises(ValueError):
        LatencySketch.from_bytes(b"XXXX" + bytes(60))
    with pytest.raises(ValueError):
        LatencySketch.from_bytes(LatencySketch().to_bytes()[:-3])


def test_memory_bounded_under_a_million_wide_range_values() -> None:
    rng = np.random.default_rng(9)
    values = 10.0 ** rng.uniform(-300, 300, 1_000_000)
    sketch = LatencySketch()
    for chunk in np.array_split(values, 100):
        sketch.add_many(chunk)
    assert sketch.count == values.size
    assert sketch.num_buckets <= 2048
    assert len(sketch.to_bytes()) <= 4 * 2048 + 2048 // 8 + 80  # 32-bit counters, bitmap, header
    # 2,048 buckets at 1 % cover ~17 decades: the top 2.5 % of 600 uniform decades keep full accuracy.
    _assert_accurate(sketch, values, np.array([0.98, 0.99, 0.999, 1.0]))
    assert sketch.quantile(0.0) == values.min()  # collapsed low end still reports the exact minimum


def test_collapsing_keeps_high_quantiles_exact_to_promise() -> None:
    values = np.random.default_rng(2).lognormal(0, 1, 50_000)
    sketch = LatencySketch(max_buckets=200)
    for chunk in np.array_split(values, 100):
        sketch.add_many(chunk)
    assert sketch.num_buckets <= 200
    # 200 buckets span a factor e^4 below the maximum (~e^4.3 here), i.e. values above ~1.35: q >= ~0.62.
    _assert_accurate(sketch, values, np.array([0.75, 0.9, 0.99, 0.999, 1.0]))
    assert sketch.quantile(0.01) > np.quantile(values, 0.01, method="lower")  # the low end is what gave way


def test_clear_empties_the_sketch() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.arange(1.0, 100.0))
    sketch.clear()
    assert sketch.count == 0 and sketch.num_buckets == 0 and math.isnan(sketch.quantile(0.5))


@pytest.mark.parametrize("top", [0, 200, 60_000, 2**31, 2**40])
def test_counter_encoding_round_trips_in_narrowest_width(top: int) -> None:
    counts = np.array([0, 1, top, 3], dtype=np.int64)
    blob = encode_counts(counts)
    decoded, end = decode_counts(blob)
    np.testing.assert_array_equal(decoded, counts)
    assert end == len(blob)
    width = 1 if top < 256 else 2 if top < 65536 else 4 if top < 2**32 else 8
    assert len(blob) == 5 + 4 * width


def _state(sketch: LatencySketch) -> tuple[object, ...]:
    return (sketch.count, sketch._zero_count, repr(sketch._sum), repr(sketch._min), repr(sketch._max),
            sketch.store.lo, sketch.store.counts.tolist(), sketch.mapping, sketch.store.max_buckets)


@pytest.mark.parametrize("values", [[], [0.31], [0.0], [0.31, 0.31], [0.31, 7.5], [0.0, 2.0], [1e-320],
                                    [0.2, 0.4, 0.5]])
@pytest.mark.parametrize(("accuracy", "max_buckets"), [(0.01, 2048), (0.02, 2048), (0.01, 16)])
def test_bytes_rebuild_exactly_the_same_sketch_and_one_or_two_values_cost_their_doubles(
        values: list[float], accuracy: float, max_buckets: int) -> None:
    sketch = LatencySketch(accuracy, max_buckets)
    for value in values:  # one add per value: the totals as a slot accumulates them
        sketch.add_many(np.array([value]))
    blob = sketch.to_bytes()
    assert _state(LatencySketch.from_bytes(blob)) == _state(sketch)
    if (accuracy, max_buckets) == (0.01, 2048) and len(values) <= 2:
        assert len(blob) == 2 + 8 * len(values)  # version and form bytes, then the values themselves


def test_merged_sketches_whose_sum_is_not_min_plus_max_keep_their_totals() -> None:
    a, b = LatencySketch(), LatencySketch()
    a.add_many(np.array([0.1]))
    b.add_many(np.array([0.2]))
    merged = LatencySketch.merge_all([a, b])
    merged._sum = math.nextafter(merged._sum, 1.0)  # a sum no rebuild from the two values gives: kept whole
    assert merged.to_bytes()[1] == 3  # the full form
    assert _state(LatencySketch.from_bytes(merged.to_bytes())) == _state(merged)


def test_the_first_format_is_still_read() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.array([0.25, 0.5, 3.0, 0.0]))
    store, present = sketch.store, sketch.store.counts != 0
    first = (struct.pack("<4sdId", b"LSK1", 0.01, 2048, sketch.mapping.min_indexable)  # magic and configuration
             + struct.pack("<qqddd", sketch._zero_count, store.lo, sketch._sum, sketch._min, sketch._max)
             + struct.pack("<I", store.counts.size) + np.packbits(present).tobytes()
             + encode_counts(store.counts[present]))
    assert _state(LatencySketch.from_bytes(first)) == _state(sketch)


@pytest.mark.parametrize(("n", "version"), [(3, 3), (20, 3), (256, 3), (257, 2), (50_000, 2)])
def test_slot_sized_sketches_write_varints_and_big_ones_the_fixed_width_form(n: int, version: int) -> None:
    """Varints pay off for a slot's few counts; a day's sketch keeps version 2's full form (as small once counts
    pass a byte, and faster to write). Both read back exactly."""
    sketch = LatencySketch()
    sketch.add_many(np.random.default_rng(n).lognormal(0, 1, n))
    blob = sketch.to_bytes()
    assert blob[:2] == bytes((version, 3))
    assert _state(LatencySketch.from_bytes(blob)) == _state(sketch)


def test_a_sketch_asked_for_fixed_widths_writes_version_2s_full_form() -> None:
    sketch = LatencySketch()
    sketch.add_many(np.array([0.2, 0.3, 0.5, 0.0]))
    blob = sketch.to_bytes(fixed_width=True)
    assert blob[:2] == bytes((2, 3)) and len(blob) > len(sketch.to_bytes())
    assert _state(LatencySketch.from_bytes(blob)) == _state(sketch)
    one = LatencySketch()
    one.add_many(np.array([0.2]))
    assert one.to_bytes(fixed_width=True) == one.to_bytes()  # a value or two: the values themselves either way
