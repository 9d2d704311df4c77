"""Confidence drift (percent change of the mean) and distribution drift (KS and PSI) per (service, model).

Rules (seeds 000/003): |mean confidence change| > 10% WARNING, > 15% CRITICAL (``confidence_drift``, see
drift.MeanDrift) over the latest ``block_size`` to twice that many calls, while the latest ``recent_size`` to
twice that many show a change beyond the warning too (so it clears minutes after confidence recovers, not when
the window has forgotten the shift); ``distribution_drift`` WARNING per feature (confidence, latency, tokens)
when the latest window of calls differs from the reference both significantly and materially:

* Reference: the feature's first ``reference_size`` values (NaN skipped: a failed call without confidence still
  counts for latency and tokens) on fixed fine bins. While it fills, every window of ``block_size`` values is
  compared (KS distance) with the reference values before it; the largest distance is the series' own natural
  variation (workload mixes that come and go), so the reference should span the traffic's usual cycle.
* Latency is judged for the calls' size: the reference's mean log-latency of each token-size class (doublings
  of prompt + completion tokens) is taken off, so a shift in the mix of short and long calls is not latency
  drift, while every call getting 1.5x slower is. Confidence and tokens are judged as they are.
* Window: the latest ``block_size`` values, judged once every ``block_size / looks_per_block`` values (a look);
  a verdict stands until the next look.
* Significant: KS p-value below ``alpha / (looks_per_block x features)``, a Bonferroni correction over the looks
  that see any one value and over the features: from sampling noise alone a series fires with probability
  below ``alpha`` per block of calls.
* Material: PSI over ``psi_bins`` bins cut at the reference's quantiles, Jeffreys-smoothed, of at least
  ``psi_warning``; and beyond the series' own swings: KS distance of at least ``natural_margin`` x the natural
  variation. (The KS distance is the steadier yardstick of those swings: over days of replayed traces no later
  window strayed 1.4x as far as the reference's own windows had, while by PSI, which point masses of token
  counts inflate, later windows strayed up to 1.9x as far.)
* Nothing is judged on fewer than ``min_current`` values.

When a drift incident is resolved or acknowledged, the reference of its feature starts over
(``DriftMonitor.rebaseline_for_alert``, on by default): a completed rollout becomes the new normal instead of
firing again whenever its figures flap.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import ACKNOWLEDGED, RESOLVED, AlertEvent, Observation
from llmpulse.processors.core.counter_bytes import (
    decode_bucket_counts,
    pack_counts,
    pack_listed,
    read_varint,
    unpack_counts,
    unzigzag,
    varint,
    zigzag,
)
from llmpulse.processors.core.drift import (
    BinnedDistribution,
    MeanDrift,
    linear_edges,
    log_edges,
    psi_band,
    quantile_groups,
)
from llmpulse.processors.core.drift_looks import Looks, Verdict, look_counts, size_offsets
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.slots import series_key, series_parts

FEATURES = ("confidence", "latency", "tokens")
DRIFT_RULES = ("confidence_drift", "distribution_drift")
_EDGES = {
    "confidence": linear_edges(0.0, 1.0, 100),
    "latency": log_edges(0.01, 600.0, 100),
    "tokens": log_edges(1.0, 1_000_000.0, 100),
}
TOKEN_CLASSES = np.geomspace(1.0, 2.0**20, 21)  # size classes: 0 tokens, [1, 2), [2, 4), ..., 2^20 and more
_CLASSES = {"latency": TOKEN_CLASSES.size + 1}  # features judged per size class; the others have one class
NEVER = -1
FEW_CELLS = 16  # up to this many values, a feature counts them one by one instead of with a bincount of its cells
_SERIES = struct.Struct("<4sI")  # magic, length of the MeanDrift state
_FEATURE = struct.Struct("<4sBBqqqdq")  # magic, frozen, has verdict, settled, ring position/fill, natural, rebaselined
_VERDICT = struct.Struct("<qqddddB")
_SERIES_MAGIC, _FIXED_WIDTH_MAGIC = b"DRF3", b"DRF2"  # now; fixed-width feature headers and counter_bytes' forms
_FIGURES = struct.Struct("<dddd")  # a verdict's KS, KS p-value, PSI and needed KS (DRF3, after its varint sizes)
_FROZEN, _JUDGED, _DRIFTED, _NATURAL, _REBASELINED = 1, 2, 4, 8, 16  # DRF3 feature flags
_FLOAT = struct.Struct("<d")
_ZERO = _FLOAT.pack(0.0)
_V1_HEADER = struct.Struct("<qI")  # first format: rows in the filling block, length of the MeanDrift state


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftConfig:
    """The reference is each feature's first ``reference_size`` values: let it span the traffic's usual cycle, since
    how far its windows stray from one another (KS distance) sets how large a shift must be to alert. A
    distribution alert needs KS p < alpha / (looks_per_block x 3 features), PSI >= psi_warning and a KS distance
    of at least natural_margin x those strays."""

    reference_size: int = 4000
    block_size: int = 500  # the current window: the latest block_size values of a feature
    min_current: int = 100  # values in the current window before a feature is judged
    recent_size: int = 50  # confidence_drift keeps firing only while the latest 50-100 calls show the change too
    confidence_warning_pct: float = 10.0  # mean confidence moved this much from its reference: WARNING ...
    confidence_critical_pct: float = 15.0  # ... and CRITICAL
    psi_warning: float = 0.2
    psi_bins: int = 10
    evaluate_every_ms: int = 5_000  # observations at most this often per series (verdicts change once per look)
    looks_per_block: int = 5  # judgements per block of values, each over the latest block
    alpha: float = 0.001  # false-alarm budget per block of calls from sampling noise (Bonferroni over looks)
    natural_margin: float = 1.5
    rebaseline_after_incident: bool = True  # a resolved or acknowledged drift incident restarts its reference

    def __post_init__(self) -> None:
        if self.reference_size < 1 or self.block_size < 1 or self.min_current < 1 or self.looks_per_block < 1:
            raise ValueError("reference_size, block_size, min_current and looks_per_block must be >= 1")
        if not 0.0 < self.alpha < 1.0 or self.psi_bins < 2 or self.natural_margin < 0:
            raise ValueError("need 0 < alpha < 1, psi_bins >= 2 and natural_margin >= 0")

    @property
    def look_size(self) -> int:
        """Values between two looks at a feature's window."""
        return -(-self.block_size // self.looks_per_block)

    @property
    def look_alpha(self) -> float:
        """The KS p-value one look must fall below (Bonferroni over looks per block and features)."""
        return self.alpha / (self.looks_per_block * len(FEATURES))


@functools.cache
def count_dtype(bound: int) -> np.dtype[Any]:
    """The narrowest signed integer type holding counts up to ``bound`` (cached: asked per feature made)."""
    for dtype in (np.int8, np.int16, np.int32):
        if bound <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _cells(values: np.ndarray, edges: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Each value's counter cell (size class x fine bin, flattened), -1 for NaN (not counted)."""
    cells = np.searchsorted(edges, values, side="right")
    if classes is not None:
        cells = classes * (edges.size + 1) + cells
    cells[np.isnan(values)] = -1
    return cells


def batch_cells(confidence: np.ndarray, latency: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature's cells of a batch of calls at once (``FeatureDrift.add_cells`` counts them); latency's in the
    size class of the call's tokens."""
    tokens = np.asarray(tokens, dtype=np.float64)
    sizes = np.searchsorted(TOKEN_CLASSES, tokens, side="right")  # (NaN tokens, not sent by the engine: top)
    return {"confidence": _cells(np.asarray(confidence, dtype=np.float64), _EDGES["confidence"]),
            "latency": _cells(np.asarray(latency, dtype=np.float64), _EDGES["latency"], sizes),
            "tokens": _cells(tokens, _EDGES["tokens"])}


class FeatureDrift:
    """Reference, current window and last verdict of one feature of one series (see the module docstring).

    Values are counted per (size class, fine bin) into ``looks_per_block`` sub-blocks of a ring; the window is
    the ring's sum. While the reference fills, each look measures the KS distance between the window and the
    reference values before it (the sub-blocks that left the ring), the largest being the natural variation;
    once the reference is complete, each look judges the window against it.

    Until its first look a feature holds its few values as a dict of counts per cell (``_first``) and no counter
    arrays: the arrays come at the first look, or when read (``reference``, ``window``, ``ring``). Many series of a
    large fleet see few calls: a series of 10 calls holds ~3.9 KB of drift state instead of ~31 KB (tracemalloc),
    and is created, counted and persisted without numpy.
    """

    __slots__ = ("_cells", "_dtypes", "_edges", "_first", "_reference", "_reference_bytes", "_ring", "_ring_cells",
                 "_window", "_window_cells", "config", "frozen", "natural", "offsets", "psi_groups",
                 "rebaselined_at_ms", "reference_cdf", "reference_psi", "reference_residuals", "ring_fill", "ring_pos",
                 "settled", "verdict")

    def __init__(self, config: DriftConfig, edges: np.ndarray, classes: int = 1) -> None:
        self.config = config
        self._edges = edges
        self._cells = (classes, edges.size + 1)
        # Counters as narrow as their bound: a sub-block of the ring never holds more than a look's values, the
        # window more than a block's, the reference about reference_size. With the defaults a series' latency
        # ring (22 x 102 cells x 5 sub-blocks) takes ~11 KB instead of ~45 KB as int32 (10,000 series keep these
        # in memory). Persisted as int64 (counter_bytes): the bytes do not depend on the width.
        self._dtypes = (count_dtype(config.looks_per_block * config.look_size), count_dtype(config.look_size))
        # the reference's pack_counts, kept between the looks that change it (to_bytes runs per persisted record;
        # a complete reference never changes): reset wherever the reference is written
        self._reference_bytes: bytes | None = None
        self.rebaselined_at_ms = NEVER
        self._start_over()

    def _start_over(self) -> None:
        """No values: the first look's counts as a dict, no counter arrays (``_allocate``)."""
        self._first: dict[int, int] | None = {}
        self._reference: np.ndarray | None
        self._window: np.ndarray | None
        self._ring: np.ndarray | None
        self._reference = self._window = self._ring = self._ring_cells = self._window_cells = None
        self._reference_bytes = None
        self._empty_figures()

    def _allocate(self) -> None:
        """The counter arrays, holding the first look's counts so far."""
        if self._first is None:
            return
        looks, (window_dtype, ring_dtype) = self.config.looks_per_block, self._dtypes
        self._reference = np.zeros(self._cells, dtype=np.int32)
        self._window = np.zeros(self._cells, dtype=window_dtype)  # the ring's sum
        self._ring = np.zeros((looks, *self._cells), dtype=ring_dtype)
        # flat views of the same counters (written in place everywhere, never replaced), for add_cells
        self._ring_cells = self._ring.reshape(looks, -1)
        self._window_cells = self._window.reshape(-1)
        if self._first:  # the first look fills sub-block 0
            cells, counts = list(self._first), list(self._first.values())
            self._ring_cells[0, cells] = counts
            self._window_cells[cells] = counts
        self._first = None

    @property
    def reference(self) -> np.ndarray:
        self._allocate()
        return self._reference  # type: ignore[return-value]

    @property
    def window(self) -> np.ndarray:
        self._allocate()
        return self._window  # type: ignore[return-value]

    @property
    def ring(self) -> np.ndarray:
        self._allocate()
        return self._ring  # type: ignore[return-value]

    def _empty_figures(self) -> None:
        self.settled = self.ring_pos = self.ring_fill = 0  # settled: reference values that left the ring
        self.frozen = False
        self.natural = 0.0
        self.verdict: Verdict | None = None
        self.offsets = np.zeros(self._cells[0], dtype=np.int64)
        # the complete reference's figures every look compares with, derived once (_derive)
        self.reference_residuals = self.reference_cdf = self.psi_groups = self.reference_psi = np.zeros(0)

    @property
    def reference_count(self) -> int:
        """Values in the reference so far (all of it once complete)."""
        if self._first is not None:
            return self.ring_fill
        return self.settled if self.frozen else self.settled + int(self._window.sum())

    def update(self, values: np.ndarray, classes: np.ndarray | None = None) -> None:
        """Add a batch in arrival order (NaN skipped); ``classes`` gives each value's size class."""
        v = np.asarray(values, dtype=np.float64).ravel()
        cells = _cells(v, self._edges, None if classes is None else np.asarray(classes).ravel())
        self.add_cells(cells[cells >= 0])

    def add_cells(self, cells: np.ndarray | list[int], looks: Looks | None = None) -> None:
        """Add values already in their cells (``batch_cells``, NaN left out), in arrival order. The figures of the
        looks crossed are left to ``looks`` (the batch's, run once every series is counted) or, without, figured
        before this returns."""
        size = self.config.look_size
        if self._first is not None:
            if len(cells) < size - self.ring_fill:  # still the first look: counted in the dict
                first = self._first
                for cell in cells.tolist() if isinstance(cells, np.ndarray) else cells:
                    first[cell] = first.get(cell, 0) + 1
                self.ring_fill += len(cells)
                return
            self._allocate()
        if len(cells) <= FEW_CELLS and len(cells) < size - self.ring_fill:  # no look crossed: one by one
            ring, window = self._ring_cells[self.ring_pos], self._window_cells
            for cell in cells:
                ring[cell] += 1
                window[cell] += 1
            self.ring_fill += len(cells)
            return
        own = looks is None
        looks = Looks() if looks is None else looks
        flat, start = np.asarray(cells, dtype=np.int64), 0
        while start < flat.size:  # one pass per look crossed, never per value
            take = min(size - self.ring_fill, flat.size - start)
            counts = np.bincount(flat[start : start + take], minlength=self.reference.size).reshape(self.window.shape)
            self.ring[self.ring_pos] += counts
            self._window += counts
            self.ring_fill += take
            start += take
            if self.ring_fill >= size:
                # A verdict is read after the batch, so only the batch's last look is judged: an earlier one's
                # verdict would be replaced unread (a later look holds at least as many values).
                self._look(looks, judge=flat.size - start < size)
        if own:
            looks.run()

    def _first_look_of(self, frozen: bool, settled: int, pos: int, fill: int, natural: float,
                       verdict: Verdict | None, reference: np.ndarray, ring: np.ndarray) -> bool:
        """Restore persisted counts that are still the first look (as ``_first``, no arrays); False otherwise."""
        looks = self.config.looks_per_block
        if (frozen or settled or pos or natural or verdict is not None or fill >= self.config.look_size
                or ring.size != looks * reference.size or reference.any()):
            return False
        cells = np.flatnonzero(ring)
        if cells.size and (int(cells[-1]) >= reference.size or int(ring.sum()) != fill or int(ring.min()) < 0):
            return False  # counts beyond sub-block 0, or not the first look's
        self._first = dict(zip(cells.tolist(), ring[cells].tolist(), strict=True))
        self.ring_fill = fill
        return True

    def _hold(self, ring: np.ndarray) -> None:
        """Take persisted sub-blocks (and their sum as the window); counts past the narrow types (a look or a
        block was larger when they were written) widen both."""
        window = ring.sum(axis=0)
        if int(ring.max(initial=0)) > np.iinfo(self.ring.dtype).max or (
                int(window.max(initial=0)) > np.iinfo(self.window.dtype).max):
            self._ring = np.zeros(self.ring.shape, dtype=np.int64)
            self._window = np.zeros(self.window.shape, dtype=np.int64)
            self._ring_cells = self._ring.reshape(self._ring.shape[0], -1)
            self._window_cells = self._window.reshape(-1)
        self.ring[:] = ring
        self.window[:] = window

    def _look(self, looks: Looks, judge: bool) -> None:
        """The window's turn: what it compares is left to ``looks``, then the oldest sub-block leaves the ring."""
        c = self.config
        n = int(self.window.sum())
        if self.frozen:
            if judge and n >= c.min_current:
                looks.judge(self, self.window.copy())
        elif self.settled >= c.block_size and n >= c.block_size:  # how far a window strays from the ones before
            looks.compare(self, self.reference.copy(), self.window.copy())
        self.ring_pos = (self.ring_pos + 1) % self.ring.shape[0]
        self.ring_fill = 0
        oldest = self.ring[self.ring_pos]
        self._window -= oldest
        if not self.frozen:  # the oldest sub-block leaves the window: it is settled reference now
            self._reference += oldest
            self._reference_bytes = None
            self.settled += int(oldest.sum())
            if self.settled + n - int(oldest.sum()) >= c.reference_size:
                self._freeze()
        oldest[:] = 0

    def _freeze(self) -> None:
        """The reference is complete: everything counted so far, and the window starts empty."""
        self._reference += self.window
        self._reference_bytes = None
        self.window[:] = 0
        self.ring[:] = 0
        self.settled = int(self.reference.sum())
        self.frozen = True
        self._derive()

    def _derive(self) -> None:
        self.offsets = size_offsets(self.reference)
        self.reference_residuals = look_counts(self.reference[None], self.offsets[None])[0]
        self.reference_cdf = np.cumsum(self.reference_residuals) / max(1, self.settled)
        self.psi_groups = quantile_groups(self.reference_residuals, self.config.psi_bins)
        self.reference_psi = np.add.reduceat(self.reference_residuals, self.psi_groups)

    def rebaseline(self, now_ms: int) -> None:
        """Forget the reference and the window: the next ``reference_size`` values are the new normal."""
        self._start_over()
        self.rebaselined_at_ms = now_ms

    def to_bytes(self) -> bytes:
        """DRF3's feature: a flags byte, varint figures, the doubles only when set, the counts as varints
        (pack_counts): ~0.4 KB for a filling latency ring of ~400 values instead of ~0.8 KB."""
        v, natural = self.verdict, _FLOAT.pack(self.natural)
        flags = ((_FROZEN if self.frozen else 0) | (_NATURAL if natural != _ZERO else 0)
                 | (_REBASELINED if self.rebaselined_at_ms != NEVER else 0))
        if v is not None:
            flags |= _JUDGED | (_DRIFTED if v.drifted else 0)
        parts = [bytes((flags,)), varint(self.settled), varint(self.ring_pos), varint(self.ring_fill)]
        if flags & _NATURAL:
            parts.append(natural)
        if flags & _REBASELINED:
            parts.append(varint(zigzag(self.rebaselined_at_ms)))
        if v is not None:
            parts += [varint(v.reference), varint(v.current), _FIGURES.pack(v.ks, v.ks_p, v.psi, v.ks_needed)]
        if self._first is not None:  # the first look: no reference yet, the ring's counts all in sub-block 0
            cells = sorted(self._first)
            ring_size = self.config.looks_per_block * self._cells[0] * self._cells[1]
            parts += [pack_listed(self._cells[0] * self._cells[1], [], []),  # (all zero: kept per layout)
                      pack_listed(ring_size, cells, [self._first[cell] for cell in cells])]
            return b"".join(parts)
        if self._reference_bytes is None:
            self._reference_bytes = pack_counts(self.reference)
        parts += [self._reference_bytes, pack_counts(self.ring)]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, offset: int, config: DriftConfig, edges: np.ndarray,
                   classes: int = 1, fixed_width: bool = False) -> tuple[FeatureDrift, int]:
        """(feature, offset past it); ``fixed_width``: a DRF2 feature. Counts over other bins than ``edges`` start
        the feature over."""
        if fixed_width:
            magic, frozen, has_verdict, settled, pos, fill, natural, rebaselined = _FEATURE.unpack_from(buf, offset)
            if magic != b"FDR1":
                raise ValueError("not a FeatureDrift serialization")
            offset += _FEATURE.size
            verdict = None
            if has_verdict:
                *head, drifted = _VERDICT.unpack_from(buf, offset)
                verdict = Verdict(*head, bool(drifted))
                offset += _VERDICT.size
            reference, offset = decode_bucket_counts(buf, offset)
            ring, offset = decode_bucket_counts(buf, offset)
        else:
            flags = buf[offset]
            settled, offset = read_varint(buf, offset + 1)
            pos, offset = read_varint(buf, offset)
            fill, offset = read_varint(buf, offset)
            frozen, natural, rebaselined, verdict = bool(flags & _FROZEN), 0.0, NEVER, None
            if flags & _NATURAL:
                (natural,) = _FLOAT.unpack_from(buf, offset)
                offset += _FLOAT.size
            if flags & _REBASELINED:
                coded, offset = read_varint(buf, offset)
                rebaselined = unzigzag(coded)
            if flags & _JUDGED:
                n_reference, offset = read_varint(buf, offset)
                n_current, offset = read_varint(buf, offset)
                verdict = Verdict(n_reference, n_current, *_FIGURES.unpack_from(buf, offset), bool(flags & _DRIFTED))
                offset += _FIGURES.size
            reference, offset = unpack_counts(buf, offset)
            ring, offset = unpack_counts(buf, offset)
        out = cls(config, edges, classes)
        out.rebaselined_at_ms = rebaselined
        if reference.size != out._cells[0] * out._cells[1]:
            return out, offset  # other bins (an older layout): this feature's reference starts over
        if out._first_look_of(bool(frozen), settled, pos, fill, natural, verdict, reference, ring):
            return out, offset
        out.reference[:] = reference.reshape(out.reference.shape)
        out.settled, out.frozen, out.natural, out.verdict = settled, bool(frozen), natural, verdict
        if ring.size == out.ring.size and pos < out.ring.shape[0]:
            out._hold(ring.reshape(out.ring.shape))
            out.ring_pos, out.ring_fill = pos, fill
        elif not out.frozen:  # looks_per_block changed while filling: what the ring held is reference too
            out._reference += ring.reshape(-1, *out.reference.shape).sum(axis=0)
            out.settled = int(out.reference.sum())
        if out.frozen:
            out._derive()
        return out, offset


class SeriesDrift:
    """The confidence mean drift and the three features' distribution drift of one (service, model)."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.mean = MeanDrift(max(2, config.reference_size), config.block_size, config.min_current,
                              recent_size=config.recent_size)
        self.features = {f: FeatureDrift(config, _EDGES[f], _CLASSES.get(f, 1)) for f in FEATURES}

    def update(self, values: dict[str, np.ndarray]) -> None:
        """Add a batch of calls (confidence, latency in seconds, tokens) in arrival order."""
        confidence = np.asarray(values["confidence"], dtype=np.float64)
        cells = batch_cells(confidence, values["latency"], values["tokens"])
        self.absorb(confidence, {feature: column.tolist() for feature, column in cells.items()})

    def absorb(self, confidence: np.ndarray, cells: Mapping[str, list[int] | np.ndarray],
               looks: Looks | None = None) -> None:
        """Add a batch of calls already in their cells (``batch_cells``, -1 for NaN); ``confidence`` the raw values
        for the mean; the looks crossed figured by ``looks`` (``FeatureDrift.add_cells``). A lone call (most series
        of a batch, at many series) takes no numpy call; many come as arrays."""
        if confidence.size == 1:
            self.mean.add(float(confidence[0]))
        else:
            present = confidence[~np.isnan(confidence)]
            if present.size:
                self.mean.update(present)
        for feature in FEATURES:
            column = cells[feature]
            kept = column[column >= 0] if isinstance(column, np.ndarray) else [cell for cell in column if cell >= 0]
            self.features[feature].add_cells(kept, looks)

    def rebaseline(self, feature: str, now_ms: int) -> None:
        self.features[feature].rebaseline(now_ms)
        if feature == "confidence":
            self.mean.rebaseline()

    def to_bytes(self) -> bytes:
        """DRF3: the magic, the MeanDrift's length as a varint, its bytes, then each feature's."""
        mean = self.mean.to_bytes()
        return b"".join([_SERIES_MAGIC, varint(len(mean)), mean, *(self.features[f].to_bytes() for f in FEATURES)])

    @classmethod
    def from_bytes(cls, blob: bytes, config: DriftConfig) -> SeriesDrift:
        """Reads DRF3, DRF2 (fixed-width headers and counter forms) and the first format."""
        magic = blob[:4]
        if magic not in (_SERIES_MAGIC, _FIXED_WIDTH_MAGIC):
            return cls._from_first_format(blob, config)
        fixed_width = magic == _FIXED_WIDTH_MAGIC
        out = cls(config)
        try:
            if fixed_width:
                _, mean_len = _SERIES.unpack_from(blob, 0)
                offset = _SERIES.size
            else:
                mean_len, offset = read_varint(blob, 4)
            out.mean = MeanDrift.from_bytes(blob[offset : offset + mean_len], config.recent_size)
            offset += mean_len
            for f in FEATURES:
                out.features[f], offset = FeatureDrift.from_bytes(blob, offset, config, _EDGES[f], _CLASSES.get(f, 1),
                                                                  fixed_width)
        except (struct.error, IndexError) as exc:
            raise ValueError("truncated SeriesDrift bytes") from exc
        return out

    @classmethod
    def _from_first_format(cls, blob: bytes, config: DriftConfig) -> SeriesDrift:
        """State of the first format (a first-N reference and two rotating blocks per feature): the confidence
        mean carries on, the confidence and tokens references seed the new ones (filled up to reference_size if
        short), latency's starts over (it had no size classes), the rotating blocks are dropped."""
        out = cls(config)
        references: dict[str, BinnedDistribution] = {}
        try:
            _, mean_len = _V1_HEADER.unpack_from(blob, 0)
            offset = _V1_HEADER.size
            out.mean = MeanDrift.from_bytes(blob[offset : offset + mean_len], config.recent_size)
            offset += mean_len
            for f in FEATURES:  # the reference blocks come first
                (length,) = struct.unpack_from("<I", blob, offset)
                references[f] = BinnedDistribution.from_bytes(blob[offset + 4 : offset + 4 + length])
                offset += 4 + length
        except struct.error as exc:
            raise ValueError("truncated SeriesDrift bytes (first format)") from exc
        for f in ("confidence", "tokens"):
            feature, old = out.features[f], references[f]
            if np.array_equal(old.edges, _EDGES[f]) and old.total:
                feature.reference[0] = old.counts
                feature.settled = old.total
                if feature.settled >= config.reference_size:
                    feature.frozen = True
                    feature._derive()
        return out


class DriftMonitor:
    """Drift state per (service, model) in one partition: updated per record, judged per look, observed by the
    engine, started over after an incident (``rebaseline_for_alert``)."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.state: KeyedState[SeriesDrift] = KeyedState(
            "drift", lambda _key: SeriesDrift(config), lambda blob: SeriesDrift.from_bytes(blob, config)
        )
        self._judged_at: dict[str, int] = {}
        self._updated_at: dict[str, int] = {}  # event time of each series' last update (in memory; see evict)
        self._said: dict[tuple[tuple[str, str], ...], tuple[Verdict | None, str]] = {}  # last verdict, in words
        # What is derived from a series' state, kept until it changes (``_changed``): the series the timer judged
        # with nothing to report, and ``figures``. At 10,000 mostly quiet series, judging every one every tick
        # was most of a tick's drift time.
        self._settled: set[str] = set()
        self._figures: dict[str, dict[str, float | str]] = {}

    def series(self) -> list[str]:
        return [key for key, _ in self.state.items()]

    def update(self, series: list[str], inverse: np.ndarray, values: dict[str, np.ndarray], offset: int,
               now_ms: int | None = None) -> None:
        if now_ms is not None:
            self._updated_at.update(dict.fromkeys(series, now_ms))
        order = np.argsort(inverse, kind="stable")  # each series' rows contiguous, in arrival order
        edges = np.searchsorted(inverse[order], np.arange(len(series) + 1))
        bounds = edges.tolist()
        confidence = np.asarray(values["confidence"], dtype=np.float64)[order]
        # every call binned at once; each series then takes its slice: of plain lists when it has few calls (most
        # series of a batch at many series), of the arrays when it has many
        cells = batch_cells(confidence, values["latency"][order], values["tokens"][order])
        few = bool((np.diff(edges) <= FEW_CELLS).any())  # lists only when some series takes them
        listed = {feature: column.tolist() for feature, column in cells.items()} if few else cells
        looks = Looks()  # every series' looks in this batch, figured together
        for s, key in enumerate(series):
            drift = self.state.for_update(key, offset)
            if drift is not None:
                self._changed(key)
                first, end = bounds[s], bounds[s + 1]
                sliced = cells if end - first > FEW_CELLS else listed
                drift.absorb(confidence[first:end], {feature: column[first:end] for feature, column in sliced.items()},
                             looks)
        looks.run()

    def evict(self, now_ms: int, idle_ms: int) -> int:
        """Delete the series not updated for ``idle_ms`` (a series restored from the changelog counts from the
        first call here); returns how many went. A series that comes back starts its reference over."""
        gone = []
        for key, _ in self.state.items():
            seen = self._updated_at.setdefault(key, now_ms)
            if now_ms - seen >= idle_ms:
                gone.append(key)
        for key in gone:
            self.state.delete(key)
            self._changed(key)
            self._updated_at.pop(key, None)
            self._judged_at.pop(key, None)
            service, model = series_parts(key)[:2]
            for feature in FEATURES:
                self._said.pop((("service", service), ("model", model), ("feature", feature)), None)
        return len(gone)

    def restore(self, key: str, blob: bytes) -> None:
        self.state.restore(key, blob)
        self._changed(key)

    def figures(self, key: str) -> dict[str, float | str]:
        """The confidence mean change and each judged feature's last verdict (KS, PSI, whether it drifted)."""
        kept = self._figures.get(key)
        if kept is None:
            kept = self._figures[key] = self._computed_figures(key)
        return dict(kept)

    def _computed_figures(self, key: str) -> dict[str, float | str]:
        drift = self.state.get(key)
        out: dict[str, float | str] = {}
        if drift is None:
            return out
        out["confidence_change_pct"] = drift.mean.percent_change()
        for feature in FEATURES:
            v = drift.features[feature].verdict
            if v is None:
                continue
            out[f"{feature}_ks"], out[f"{feature}_ks_p"] = v.ks, v.ks_p
            out[f"{feature}_psi"], out[f"{feature}_psi_band"] = v.psi, psi_band(v.psi)
            out[f"{feature}_ks_needed"], out[f"{feature}_drifted"] = v.ks_needed, float(v.drifted)
        return out

    def observe_all(self, now_ms: int,
                    open_rules: Mapping[tuple[tuple[str, str], ...], frozenset[str]]) -> list[Observation]:
        """The timer's judgement of every series (``observe``, forced, with ``open_rules``): a series judged with
        nothing to report and unchanged since has nothing to report now either, unless an incident opened on it."""
        held = set()
        for labels, rules in open_rules.items():
            if not rules.isdisjoint(DRIFT_RULES):
                named = dict(labels)
                held.add(series_key((named.get("service"), named.get("model"))))
        out: list[Observation] = []
        for key in self.series():
            if key in self._settled and key not in held:
                continue
            found = self.observe(key, now_ms, force=True, open_rules=open_rules)
            if found:
                out += found
            else:
                self._settled.add(key)
        return out

    def observe(self, key: str, now_ms: int, force: bool = False,
                open_rules: Mapping[tuple[tuple[str, str], ...], frozenset[str]] | None = None) -> list[Observation]:
        """Drift rule evaluations for one series; at most once per ``evaluate_every_ms`` unless forced. With
        ``open_rules`` (``AlertPolicy.open_rules()``) only the breached ones and those with an open incident."""
        c = self.config
        if not force:  # forced (timer) judgements run on wall-clock time and must not throttle event-time ones
            if now_ms - self._judged_at.get(key, -c.evaluate_every_ms) < c.evaluate_every_ms:
                return []
            self._judged_at[key] = now_ms
        drift = self.state.get(key)
        if drift is None:
            return []
        service, model = series_parts(key)[:2]
        labels = (("service", service), ("model", model))
        change = drift.mean.percent_change()
        severity = None
        if not np.isnan(change) and abs(change) > c.confidence_critical_pct:
            severity = "CRITICAL"
        elif not np.isnan(change) and abs(change) > c.confidence_warning_pct:
            severity = "WARNING"
        recent = drift.mean.recent_percent_change()
        if severity and not np.isnan(recent) and abs(recent) <= c.confidence_warning_pct:
            severity = None  # the latest calls are back to the baseline: over, though the window still holds it
        out = []
        if open_rules is None or severity or "confidence_drift" in open_rules.get((labels[1], labels[0]), ()):
            said = (f"mean confidence changed {change:+.1f}% vs baseline for {service}/{model}" if change == change
                    else f"mean confidence of {service}/{model}: baseline or recent calls still too few to compare")
            out.append(Observation("confidence_drift", labels, severity, 0.0 if np.isnan(change) else change,
                                   c.confidence_warning_pct, f"last {c.block_size} calls", said, now_ms))
        for feature in FEATURES:
            fd = drift.features[feature]
            if (open_rules is None or (fd.verdict is not None and fd.verdict.drifted)
                    or "distribution_drift" in open_rules.get((("feature", feature), labels[1], labels[0]), ())):
                out.append(self._distribution(fd, feature, labels, now_ms))
        return out

    def _distribution(self, fd: FeatureDrift, feature: str, labels: tuple[tuple[str, str], ...],
                      now_ms: int) -> Observation:
        c, v, label = self.config, fd.verdict, (*labels, ("feature", feature))
        said = self._said.get(label)
        if said is None or said[0] is not v:  # a verdict changes once per look: word it once
            said = self._said[label] = (v, self._summary(v, feature, labels[0][1], labels[1][1]))
        if v is None:  # nothing to judge yet (reference filling): no evidence of drift
            return Observation("distribution_drift", label, None, 0.0, c.psi_warning, f"last {c.block_size} calls",
                               said[1], now_ms)
        return Observation("distribution_drift", label, "WARNING" if v.drifted else None, v.psi, c.psi_warning,
                           f"last {v.current} values", said[1], now_ms)

    def _summary(self, v: Verdict | None, feature: str, service: str, model: str) -> str:
        c = self.config
        if v is None:
            return f"{feature} reference for {service}/{model} still filling ({c.reference_size} values)"
        sized = " for the calls' token sizes" if feature in _CLASSES else ""
        state = "drifted" if v.drifted else "within its reference"
        return (f"{feature}{sized} {state} for {service}/{model}: PSI {v.psi:.3f} ({psi_band(v.psi)}; alerts from "
                f"{c.psi_warning:.2f}), KS {v.ks:.3f} (alerts from {v.ks_needed:.3f}, its reference's own swings "
                f"x {c.natural_margin:g}) at p={v.ks_p:.2g} (alerts below {c.look_alpha:.1g}); {v.current} values "
                f"vs a reference of {v.reference}")

    def rebaseline(self, key: str, feature: str | None = None, now_ms: int = 0) -> bool:
        """Start the reference of one feature (all when None) of a series over; False for an unknown series."""
        drift = self.state.get(key)
        if drift is None:
            return False
        for f in FEATURES if feature is None else (feature,):
            drift.rebaseline(f, now_ms)
        self.state.touch(key)
        self._changed(key)
        return True

    def _changed(self, key: str) -> None:
        self._settled.discard(key)
        self._figures.pop(key, None)

    def rebaseline_for_alert(self, event: AlertEvent) -> bool:
        """After a drift incident is resolved or acknowledged, its feature's reference starts over (when
        ``rebaseline_after_incident``); once per incident: skipped when the reference was already started over
        after the incident began (acknowledged, then resolved). Pure function of the event: replays agree."""
        if not self.config.rebaseline_after_incident or event.rule not in DRIFT_RULES:
            return False
        if event.status not in (RESOLVED, ACKNOWLEDGED):
            return False
        feature = event.labels.get("feature", "confidence") if event.rule == "distribution_drift" else "confidence"
        key = series_key((event.service, event.model))
        drift = self.state.get(key)
        if drift is None or feature not in drift.features:
            return False
        if drift.features[feature].rebaselined_at_ms >= event.started_at_ms:
            return False
        return self.rebaseline(key, feature, event.updated_at_ms)
