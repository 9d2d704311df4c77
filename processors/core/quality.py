"""Answer quality from feedback: per (service, model, prompt version, experiment, variant) series, and per
service the model versions it ran with their quality, so an alert can name the version to roll back to.

Calls and feedback meet in feedback_join.py. Each series keeps one vector per ``slot_s`` of event time (the
call's time): calls, ratings, score sum, binary ratings, correct ones, a histogram of input sizes (log2 of
input tokens) and a histogram of scores (the label distribution). Alerts compare the last ``window_s`` with
the ``reference_s`` before it, over every series of the same service:

- ``quality_drop`` (seed 003's "Quality drop"): accuracy below ``accuracy_threshold`` (0.80) when at least
  ``min_ratings`` binary labels arrived in the window, else the mean score (0..1) below ``min_mean_score``;
- ``concept_drift``: quality fell by at least ``concept_drop`` from the reference while the input
  distribution stayed put (input-size PSI below ``input_stable_psi``): the same inputs, worse answers.
  When inputs moved too, it is data drift (drift_monitor.py) and this rule stays quiet.

Label drift (PSI of the score histogram, window vs reference) is a figure. A version is ``model@prompt`` (or
the model alone); when the alerting series runs a version that came after another one with good quality,
its alerts carry ``rollback_to`` (mitigations.py turns it into "roll back ... to ..."). With
``rollback_enabled`` (off by default) a firing alert also yields a ``RouteDecision``, at most one per
service per ``rollback_cooldown_s`` so routing cannot flap; the worker publishes it on a compacted topic that
the SDK's ``ModelRoutes`` follows.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpulse.processors.core.alert_policy import FIRING, AlertEvent, Observation
from llmpulse.processors.core.columns import CallColumns
from llmpulse.processors.core.feedback_join import FeedbackColumns, Joined, JoinLog, PendingFeedback, id_hashes
from llmpulse.processors.core.grouping import unique_inverse
from llmpulse.processors.core.keyed_state import KeyedState, PersistedState
from llmpulse.processors.core.slots import series_key, series_parts

QUALITY_RULES = ("quality_drop", "concept_drift")
SERIES_FIELDS = ("service", "model", "prompt_version", "experiment_id", "variant")
CALLS, RATED, SCORE, BINARY, CORRECT = range(5)
IN_BINS, LABEL_BINS = 10, 5
IN_HIST, LABEL_HIST = 5, 5 + IN_BINS
WIDTH = LABEL_HIST + LABEL_BINS
PENDING_KEY = "pending"
_COUNT = struct.Struct("<i")


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityConfig:
    join_window_s: float = 900.0  # feedback more than this after its call is not joined
    join_slot_s: float = 10.0  # calls wait for their feedback in slots of this much event time
    max_joined_calls: int = 1_000_000  # per partition: oldest join slots go first beyond it
    max_pending_feedback: int = 100_000  # feedback waiting for its call, per partition
    slot_s: float = 60.0  # one slot of each series' quality vectors
    window_s: float = 900.0  # the recent window the rules judge ...
    reference_s: float = 3600.0  # ... against the reference just before it
    min_ratings: int = 30  # ratings in the window (binary ones for accuracy) before judging
    accuracy_threshold: float = 0.80  # quality_drop below this share of correct answers ...
    min_mean_score: float = 0.60  # ... or, without binary labels, below this mean score (0..1)
    concept_drop: float = 0.10  # concept_drift: quality this much below the reference ...
    input_stable_psi: float = 0.10  # ... while the input sizes' PSI stays under this
    min_version_ratings: int = 30  # a version needs this many ratings to be a rollback target
    rollback_enabled: bool = False  # publish route-back decisions (topics.model_routes)
    rollback_cooldown_s: float = 1800.0  # at most one route-back per service this often


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Route a service back to an earlier version (fields of schemas/model_route.v1.avsc)."""

    service: str
    from_version: str
    to_version: str
    to_model: str
    to_prompt_version: str | None
    reason: str
    alert_id: str
    decided_at_ms: int

    def to_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class QualitySlots:
    """One series: a WIDTH-vector per slot start (ms), as one matrix row per slot (in the order the slots were
    first added; ``starts`` beside it) rather than an array object and a dict entry each, half the memory of a
    series' ~76 slots; ``rated_ms`` is the newest slot start holding ratings (-1: none), so a pass over many series
    skips those with no ratings in the window without summing slots."""

    __slots__ = ("matrix", "rated_ms", "starts")

    def __init__(self) -> None:
        self.starts = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, WIDTH))
        self.rated_ms = -1

    @property
    def slots(self) -> dict[int, np.ndarray]:
        """Slot start -> its vector (copies), in the order the slots were first added."""
        return dict(zip(self.starts.tolist(), self.matrix.copy(), strict=True))

    def add(self, start_ms: int, vector: np.ndarray) -> None:
        starts = self.starts
        if starts.shape[0] and int(starts[-1]) == start_ms:  # the usual case: the newest slot
            self.matrix[-1] += vector
        else:
            at = np.flatnonzero(starts == start_ms)
            if at.shape[0]:
                self.matrix[at[0]] += vector
            else:
                self.starts = np.append(starts, np.int64(start_ms))
                self.matrix = np.vstack([self.matrix, vector])
        if vector[RATED] and start_ms > self.rated_ms:
            self.rated_ms = start_ms

    def add_all(self, starts: np.ndarray, vectors: np.ndarray) -> None:
        """``add`` of each (slot start, vector) in turn (starts distinct); a series holding no slot yet (the first
        record of each of many series) takes them as they are."""
        if self.starts.shape[0]:
            for start_ms, vector in zip(starts.tolist(), vectors, strict=True):
                self.add(start_ms, vector)
            return
        self.starts, self.matrix = starts.astype(np.int64), np.array(vectors, dtype=np.float64)
        rated = starts[vectors[:, RATED] != 0]
        if rated.shape[0]:
            self.rated_ms = max(self.rated_ms, int(rated.max()))

    def evict(self, oldest_ms: int) -> None:
        if self.starts.shape[0] and int(self.starts.min()) < oldest_ms:
            kept = self.starts >= oldest_ms
            self.starts, self.matrix = self.starts[kept], self.matrix[kept]

    def total(self, lo_ms: int, hi_ms: int) -> np.ndarray:
        """Sum over slots starting in [lo_ms, hi_ms), added in the slots' order (as always: the same float sums)."""
        out = np.zeros(WIDTH)
        for vector in self.matrix[(self.starts >= lo_ms) & (self.starts < hi_ms)]:
            out += vector
        return out

    def to_bytes(self) -> bytes:
        order = np.argsort(self.starts, kind="stable")
        return _COUNT.pack(self.starts.size) + self.starts[order].tobytes() + self.matrix[order].tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> QualitySlots:
        (n,) = _COUNT.unpack_from(blob, 0)
        starts = np.frombuffer(blob, dtype="<i8", count=n, offset=_COUNT.size)
        matrix = np.frombuffer(blob, dtype="<f8", count=n * WIDTH, offset=_COUNT.size + 8 * n).reshape(n, WIDTH)
        out = cls()
        out.starts, out.matrix = starts.astype(np.int64), matrix.astype(np.float64)  # copies: writable
        rated = starts[matrix[:, RATED] > 0]
        out.rated_ms = int(rated.max()) if rated.size else -1
        return out


class VersionBook:
    """One service's versions: first and last call time and lifetime feedback; the last route decision."""

    __slots__ = ("last_route_ms", "versions")

    def __init__(self) -> None:
        self.versions: dict[str, list[float]] = {}  # version -> [first_ms, last_ms, rated, score, binary, correct]
        self.last_route_ms = -1

    def seen(self, version: str, first_ms: int, last_ms: int) -> None:
        row = self.versions.setdefault(version, [first_ms, last_ms, 0.0, 0.0, 0.0, 0.0])  # floats, as rated() sums
        row[0], row[1] = min(row[0], first_ms), max(row[1], last_ms)

    def rated(self, version: str, totals: np.ndarray) -> None:
        row = self.versions.get(version)
        if row is not None:
            for i, column in enumerate((RATED, SCORE, BINARY, CORRECT)):
                row[2 + i] += float(totals[column])

    def quality(self, version: str, min_ratings: int) -> tuple[str, float] | None:
        row = self.versions.get(version)
        if row is None:
            return None
        if row[4] >= min_ratings:
            return "accuracy", row[5] / row[4]
        return ("mean score", row[3] / row[2]) if row[2] >= min_ratings else None

    def previous_good(self, version: str, config: QualityConfig) -> str | None:
        """The most recent version before ``version`` whose quality passes the thresholds."""
        current = self.versions.get(version)
        if current is None:
            return None
        best: tuple[float, str] | None = None
        for name, row in self.versions.items():
            quality = self.quality(name, config.min_version_ratings)
            if name == version or row[0] >= current[0] or quality is None:
                continue
            floor = config.accuracy_threshold if quality[0] == "accuracy" else config.min_mean_score
            if quality[1] >= floor and (best is None or row[0] > best[0]):
                best = (row[0], name)
        return None if best is None else best[1]

    def to_bytes(self) -> bytes:
        return json.dumps({"v": self.versions, "r": self.last_route_ms}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> VersionBook:
        data = json.loads(blob)
        out = cls()
        out.versions, out.last_route_ms = data["v"], data["r"]
        return out


def joined_arms(joined: Joined) -> tuple[np.ndarray, np.ndarray]:
    """(experiment_id, variant) of each joined feedback event, None outside experiments."""
    names, inverse = np.unique(joined.series.astype(str), return_inverse=True)
    parts = [series_parts(name) for name in names.tolist()]
    experiment = np.array([p[3] or None for p in parts] + [None], dtype=object)[:-1]
    variant = np.array([p[4] or None for p in parts] + [None], dtype=object)[:-1]
    return experiment[inverse], variant[inverse]


def version_of(model: str | None, prompt_version: str | None) -> str:
    return f"{model or ''}@{prompt_version}" if prompt_version else (model or "")


def psi(reference: np.ndarray, current: np.ndarray, smoothing: float = 0.5) -> float:
    """Population stability index of two histograms (Laplace-smoothed so empty bins stay finite)."""
    p = (reference + smoothing) / (reference.sum() + smoothing * reference.size)
    q = (current + smoothing) / (current.sum() + smoothing * current.size)
    return float(np.sum((q - p) * np.log(q / p)))


class QualityMonitor:
    def __init__(self, config: QualityConfig) -> None:
        self.config = config
        self.joins = JoinLog("qjoin")
        self.pending: KeyedState[PendingFeedback] = KeyedState(
            "qpending", lambda _k: PendingFeedback(), PendingFeedback.from_bytes)
        self.state: KeyedState[QualitySlots] = KeyedState("quality", lambda _k: QualitySlots(), QualitySlots.from_bytes)
        self.versions: KeyedState[VersionBook] = KeyedState(
            "qversions", lambda _k: VersionBook(), VersionBook.from_bytes)
        self.newest_ms = 0
        self.joined = 0  # since this engine was built (a figure, not state)
        self._changed: dict[str, None] = {}  # services whose series records changed since ``observe_changed``
        self._members: dict[str, dict[str, None]] = {}  # service -> its series names (in memory, see _by_service)
        self._indexed = 0  # names in _members

    def states(self) -> list[PersistedState]:
        return [self.joins, self.pending, self.state, self.versions]

    @property
    def _window_ms(self) -> int:
        return int(self.config.join_window_s * 1000)

    # ---- calls and feedback ------------------------------------------------------------------------------
    def on_calls(self, calls: CallColumns, offset: int) -> Joined:
        """Remember the calls for the join, join feedback that came first; returns the feedback joined."""
        if not len(calls):
            return Joined.empty()
        if calls.prompt_version is None:  # a wire format without the column (OTLP)
            calls.prompt_version = np.full(len(calls), None, dtype=object)
        keys, inverse = calls.group_by(*SERIES_FIELDS)
        series = np.array([series_key(k) for k in keys], dtype=object)
        hashes, times = id_hashes(calls.event_id), calls.timestamp_ms.astype(np.int64)
        self.newest_ms = max(self.newest_ms, int(times.max()))
        self._remember(hashes, times, series, inverse, offset)
        joined = self._join_pending(hashes, times, series[inverse], offset)
        self._apply(series, inverse, times, calls.input_tokens, joined, offset)
        return joined

    def on_feedback(self, feedback: FeedbackColumns, offset: int) -> Joined:
        """Join feedback to the calls absorbed before it; keep the rest pending (bounded, by age)."""
        if not len(feedback):
            return Joined.empty()
        hashes, times = id_hashes(feedback.request_id), feedback.timestamp_ms.astype(np.int64)
        self.newest_ms = max(self.newest_ms, int(times.max()))
        score, binary = feedback.scores()
        found_series = np.full(len(feedback), None, dtype=object)
        found_ms = np.zeros(len(feedback), dtype=np.int64)
        for _key, slot in self.joins.items():
            want = np.flatnonzero(found_series == None)  # noqa: E711
            if not want.size:
                break
            rows = slot.find(hashes[want], offset)
            hit = rows >= 0
            names = np.array(slot.series, dtype=object)
            found_series[want[hit]] = names[slot.codes[rows[hit]]]
            found_ms[want[hit]] = slot.times[rows[hit]]
        found = found_series != None  # noqa: E711
        late = found & (times - found_ms > self._window_ms)
        matched = found & ~late
        pending = self.pending.for_update(PENDING_KEY, offset)
        if pending is not None:
            pending.add(hashes, offset, feedback, np.flatnonzero(~found))
            pending.expired += int(late.sum())
            pending.expire(self.newest_ms - 2 * self._window_ms, self.config.max_pending_feedback)
        joined = Joined(found_series[matched], found_ms[matched], score[matched], binary[matched])
        self._apply(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                    np.zeros(0, dtype=np.int64), joined, offset)
        return joined

    def _remember(self, hashes: np.ndarray, times: np.ndarray, series: np.ndarray, inverse: np.ndarray,
                  offset: int) -> None:
        slot_ms = int(self.config.join_slot_s * 1000)
        oldest = self.newest_ms - 2 * self._window_ms
        starts = times // slot_ms * slot_ms
        for start in np.unique(starts).tolist():
            if start + slot_ms < oldest:
                continue  # older than any feedback may still be joined to
            slot = self.joins.for_update(start, offset)
            if slot is not None:
                rows = np.flatnonzero(starts == start)
                slot.add(hashes[rows], offset, times[rows], series.tolist(), inverse[rows])
        total = 0
        for start, slot in sorted(self.joins.items(), key=lambda item: item[0], reverse=True):  # newest first
            total += len(slot)
            if start + slot_ms < oldest or total > self.config.max_joined_calls:
                self.joins.drop(start)

    def _join_pending(self, hashes: np.ndarray, times: np.ndarray, series: np.ndarray, offset: int) -> Joined:
        pending = self.pending.get(PENDING_KEY)
        if pending is None or not len(pending):
            return Joined.empty()
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        at = np.minimum(np.searchsorted(ordered, pending.hashes), ordered.size - 1)
        rows = order[at]
        hit = (ordered[at] == pending.hashes) & (pending.offsets < offset)
        hit &= pending.times - times[rows] <= self._window_ms
        if not hit.any():
            return Joined.empty()
        kinds, values, rows = pending.kinds[hit], pending.values[hit], rows[hit]
        feedback = FeedbackColumns("", np.zeros(kinds.size, dtype=object), times[rows], kinds, values,
                                   np.zeros(kinds.size, dtype=object))
        score, binary = feedback.scores()
        return Joined(series[rows], times[rows], score, binary)

    def _apply(self, series: np.ndarray, call_codes: np.ndarray, call_ms: np.ndarray, input_tokens: np.ndarray,
               joined: Joined, offset: int) -> None:
        """One update per touched series (and service version book) for everything this record brings: the calls
        (``call_codes`` into the batch's distinct ``series``) and the feedback joined."""
        n_calls = call_codes.size
        if not n_calls + len(joined):
            return
        self.joined += len(joined)
        # Series codes for the calls and the joined feedback, ranked by name (the order series are updated in).
        code_of = {name: code for code, name in enumerate(series.tolist())}
        extra = [name for name in dict.fromkeys(joined.series.tolist()) if name not in code_of]
        code_of.update((name, len(series) + k) for k, name in enumerate(extra))
        every = np.concatenate([series, np.array(extra, dtype=object)])
        rank = np.argsort(every.astype(str), kind="stable")
        unique_names = every[rank]
        ranked = np.empty(rank.size, dtype=np.int64)
        ranked[rank] = np.arange(rank.size)
        joined_codes = np.fromiter(map(code_of.__getitem__, joined.series.tolist()), dtype=np.int64,
                                   count=len(joined))
        name_of = ranked[np.concatenate([call_codes.astype(np.int64), joined_codes])]
        times = np.concatenate([call_ms, joined.call_ms])
        slot_ms = int(self.config.slot_s * 1000)
        slots, start_of = unique_inverse(times // slot_ms)  # (slot numbers span a small range: counted, not sorted)
        unique_starts = slots * slot_ms
        cell = name_of * unique_starts.size + start_of
        cells, cell_of = unique_inverse(cell)
        # Each call and joined rating adds to a few columns of its (series, slot) cell: one weighted count over
        # (cell, column), in row order per column as adding whole rows would
        in_bin = np.clip(np.floor(np.log2(np.maximum(input_tokens, 1))).astype(np.int64) - 5, 0, IN_BINS - 1)
        label_bin = np.minimum((joined.score * LABEL_BINS).astype(np.int64), LABEL_BINS - 1)
        call_at, rating_at = cell_of[:n_calls] * WIDTH, cell_of[n_calls:] * WIDTH
        binary = joined.binary.astype(np.float64)
        columns = np.concatenate([call_at + CALLS, call_at + IN_HIST + in_bin, rating_at + RATED, rating_at + SCORE,
                                  rating_at + BINARY, rating_at + CORRECT, rating_at + LABEL_HIST + label_bin])
        ones = np.ones(n_calls)
        added = np.concatenate([ones, ones, np.ones(len(joined)), joined.score, binary,
                                binary * (joined.score >= 0.5), np.ones(len(joined))])
        sums = np.bincount(columns, weights=added, minlength=cells.size * WIDTH).reshape(cells.size, WIDTH)
        # cells are sorted by (name, start): each name's cells are one run, found by one search
        bounds = np.searchsorted(cells // unique_starts.size, np.arange(unique_names.size + 1)).tolist()
        called = np.bincount(name_of[:n_calls], minlength=unique_names.size) > 0
        rated = np.bincount(name_of[n_calls:], minlength=unique_names.size) > 0
        first_ms = np.full(unique_names.size, np.iinfo(np.int64).max, dtype=np.int64)
        last_ms = np.full(unique_names.size, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(first_ms, name_of[:n_calls], call_ms)
        np.maximum.at(last_ms, name_of[:n_calls], call_ms)
        horizon = self.newest_ms - int((self.config.window_s + self.config.reference_s + self.config.slot_s) * 1000)
        books: dict[str, VersionBook | None] = {}
        for i, name in enumerate(unique_names.tolist()):
            target = self.state.for_update(name, offset)
            if target is not None:
                mine = slice(bounds[i], bounds[i + 1])
                target.add_all(unique_starts[cells[mine] % unique_starts.size], sums[mine])
                target.evict(horizon)
            service, model, prompt_version = series_parts(name)[:3]
            self._changed[service] = None
            members = self._members.setdefault(service, {})
            if name not in members:
                members[name] = None
                self._indexed += 1
            if service not in books:
                books[service] = self.versions.for_update(service, offset)
            book = books[service]
            if book is not None:
                version = version_of(model, prompt_version)
                if called[i]:
                    book.seen(version, int(first_ms[i]), int(last_ms[i]))
                if rated[i]:  # (a series no feedback joined adds zeros: nothing)
                    book.rated(version, sums[bounds[i] : bounds[i + 1]].sum(axis=0))

    # ---- decisions -------------------------------------------------------------------------------------------
    def observe(self, now_ms: int, services: Iterable[str] | None = None) -> list[Observation]:
        """Quality-drop and concept-drift observations at ``now_ms`` of every series with at least ``min_ratings``
        ratings in the window: of every service (the timer's pass, ``services`` None) or of ``services`` only.
        A series is judged against the reference of its whole service."""
        config = self.config
        lo = now_ms - int(config.window_s * 1000)
        reference_lo = lo - int(config.reference_s * 1000)
        by_service = self._by_service()
        if services is None:  # only a series with ratings in the window can be judged: skip the others unsummed
            services = [service for service, names in by_service.items()
                        if any(slots is not None and slots.rated_ms >= lo for slots in map(self.state.get, names))]
        out: list[Observation] = []
        for service in services:
            members = [(name, slots) for name in by_service.get(service, ())
                       if (slots := self.state.get(name)) is not None]
            judged = [(name, recent) for name, recent in
                      ((name, slots.total(lo, now_ms + 1)) for name, slots in members if slots.rated_ms >= lo)
                      if recent[RATED] >= config.min_ratings]
            if not judged:
                continue
            reference = np.zeros(WIDTH)
            for _name, slots in members:
                reference += slots.total(reference_lo, lo)
            for name, recent in judged:
                out += self._judge(name, recent, reference, now_ms)
        return out

    def observe_changed(self, now_ms: int) -> list[Observation]:
        """``observe`` for the services whose series (slots, version book) records changed since the last call:
        the event-driven pass; the timer's full pass (``observe`` of every service) judges the rest as time moves."""
        changed, self._changed = self._changed, {}
        return self.observe(now_ms, changed) if changed else []

    def _by_service(self) -> dict[str, dict[str, None]]:
        """Service -> its series names; indexed again from the state when series were restored from the changelog."""
        if self._indexed != len(self.state):
            self._members = {}
            for name, _slots in self.state.items():
                self._members.setdefault(series_parts(name)[0], {})[name] = None
            self._indexed = len(self.state)
        return self._members

    def _judge(self, name: str, recent: np.ndarray, reference: np.ndarray, now_ms: int) -> list[Observation]:
        config = self.config
        service, model, prompt_version, experiment, variant = series_parts(name)
        version = version_of(model, prompt_version)
        book = self.versions.get(service)
        rollback = book.previous_good(version, config) if book is not None else None
        labels = [("service", service), ("model", model), ("version", version)]
        labels += [(k, v) for k, v in (("experiment", experiment), ("variant", variant)) if v]
        labels += [("rollback_to", rollback)] if rollback else []
        accuracy = recent[BINARY] >= config.min_ratings
        metric = "accuracy" if accuracy else "mean score"
        quality = _quality(recent, accuracy)
        floor = config.accuracy_threshold if accuracy else config.min_mean_score
        window = _label(config.window_s)
        advice = f"; roll back to {rollback}" if rollback else ""
        severity = None if quality >= floor else ("ERROR" if quality < floor - 0.15 else "WARNING")
        out = [Observation(
            "quality_drop", tuple(labels), severity, quality, floor, window,
            f"{service} {version}{_arm(experiment, variant)}: {metric} {quality:.2f} below {floor:.2f} over "
            f"{int(recent[RATED])} ratings{advice}", now_ms)]
        enough = (reference[BINARY] if accuracy else reference[RATED]) >= config.min_ratings
        if enough:
            before = _quality(reference, accuracy)
            shift = psi(reference[IN_HIST:IN_HIST + IN_BINS], recent[IN_HIST:IN_HIST + IN_BINS])
            drifting = before - quality >= config.concept_drop and shift < config.input_stable_psi
            out.append(Observation(
                "concept_drift", tuple(labels), "WARNING" if drifting else None, before - quality,
                config.concept_drop, window,
                f"concept drift on {service} {version}{_arm(experiment, variant)}: {metric} {before:.2f} -> "
                f"{quality:.2f} while the inputs stayed the same (input PSI {shift:.2f}){advice}", now_ms))
        return out

    def routes(self, events: list[AlertEvent], now_ms: int) -> list[RouteDecision]:
        """Route-back decisions for newly firing quality alerts that name a version to return to (opt-in)."""
        if not self.config.rollback_enabled:
            return []
        out = []
        for event in events:
            target = event.labels.get("rollback_to")
            if event.rule not in QUALITY_RULES or event.status != FIRING or not target or not event.service:
                continue
            book = self.versions.get(event.service)
            if book is None or (book.last_route_ms >= 0
                                and now_ms - book.last_route_ms < self.config.rollback_cooldown_s * 1000):
                continue
            book.last_route_ms = now_ms
            self.versions.touch(event.service)
            model, _, prompt_version = target.partition("@")
            out.append(RouteDecision(event.service, event.labels.get("version", ""), target, model,
                                     prompt_version or None, event.summary, event.alert_id, now_ms))
        return out

    # ---- views ---------------------------------------------------------------------------------------------------
    def figures(self, now_ms: int, rated_only: bool = False) -> list[dict[str, Any]]:
        """Per series over the window: ratings, mean score, accuracy, label drift against the reference; with
        ``rated_only`` only the series with ratings in the window."""
        lo = now_ms - int(self.config.window_s * 1000)
        rows = []
        for name, slots in self.state.items():
            if rated_only and slots.rated_ms < lo:
                continue
            recent, ref = slots.total(lo, now_ms + 1), slots.total(lo - int(self.config.reference_s * 1000), lo)
            row: dict[str, Any] = dict(zip(SERIES_FIELDS, series_parts(name), strict=True))
            row.update(calls=int(recent[CALLS]), ratings=int(recent[RATED]),
                       mean_score=_ratio(recent[SCORE], recent[RATED]),
                       accuracy=_ratio(recent[CORRECT], recent[BINARY]),
                       label_psi=psi(ref[LABEL_HIST:], recent[LABEL_HIST:]) if ref[RATED] and recent[RATED] else None)
            rows.append(row)
        return rows

    def versions_of(self, service: str) -> dict[str, dict[str, Any]]:
        book = self.versions.get(service)
        if book is None:
            return {}
        return {name: {"first_ms": int(row[0]), "last_ms": int(row[1]), "ratings": int(row[2]),
                       "quality": book.quality(name, 1)} for name, row in book.versions.items()}


def _quality(vector: np.ndarray, accuracy: bool) -> float:
    return float(vector[CORRECT] / vector[BINARY]) if accuracy else float(vector[SCORE] / max(vector[RATED], 1))


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def _arm(experiment: str, variant: str) -> str:
    return f" ({experiment}/{variant})" if experiment or variant else ""


def _label(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h" if s % 3600 == 0 else f"{s // 60}m" if s % 60 == 0 else f"{s}s"
