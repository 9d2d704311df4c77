"""Forward llmpulse alert records to Alertmanager (API v2) or to any JSON webhook.

Mapping: a ``firing`` or ``acknowledged`` record becomes an active Alertmanager alert (``startsAt`` only);
a ``resolved`` record carries ``endsAt = updated_at`` so Alertmanager resolves the same alert. Alertmanager
identifies an alert by its label set, so labels hold only what is stable over an incident's lifecycle
(rule, severity, fingerprint, series); everything that changes (observed value, who acknowledged) goes in
the annotations.

Delivery: ``HttpPoster`` retries connection errors, 429 and 5xx with capped exponential backoff and raises
``DeliveryError`` when the attempts run out, so the caller can keep its consumer offset and try again;
other 4xx answers can never succeed and raise ``RejectedError``. Nothing here touches Kafka.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

ACTIVE_STATUSES = frozenset({"firing", "acknowledged"})
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
# Labels the record's own fields define; a same-named entry in the record's free-form labels must not win.
_CORE_LABELS = ("alertname", "severity", "priority", "fingerprint", "service", "model", "provider")


def rfc3339(ms: int) -> str:
    """Unix milliseconds as the RFC 3339 UTC timestamp Alertmanager parses."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def label_name(key: str) -> str:
    """A Prometheus-valid label name: other characters become ``_``, a leading digit gets a ``_`` prefix."""
    name = _INVALID_LABEL_CHARS.sub("_", key) or "_"
    return f"_{name}" if name[0].isdigit() else name


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def alertmanager_alert(record: Mapping[str, Any], generator_url: str | None = None) -> dict[str, Any]:
    """One alert record (schemas/alert.v1.avsc) as a postable Alertmanager v2 alert."""
    labels = {label_name(k): str(v) for k, v in (record.get("labels") or {}).items() if v not in (None, "")}
    for key in _CORE_LABELS:
        labels.pop(key, None)
    labels.update(
        alertname=record["rule"],
        severity=record["severity"].lower(),
        priority=record["priority"],
        fingerprint=record["fingerprint"],
    )
    for key in ("service", "model", "provider"):
        if record.get(key):
            labels[key] = record[key]
    annotations = {
        "summary": record["summary"],
        "mitigation": record.get("mitigation") or "",
        "observed": _format_number(record["observed"]),
        "threshold": _format_number(record["threshold"]),
        "window": record["window"],
        "alert_id": record["alert_id"],
        "status": record["status"],
    }
    if record.get("acknowledged_by"):
        annotations["acknowledged_by"] = record["acknowledged_by"]
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(record["started_at_ms"]),
    }
    if record["status"] not in ACTIVE_STATUSES:
        # Alertmanager refuses endsAt before startsAt; a resolve stamped earlier still has to resolve.
        alert["endsAt"] = rfc3339(max(record["updated_at_ms"], record["started_at_ms"]))
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def webhook_body(record: Mapping[str, Any]) -> bytes:
    """The raw alert record as JSON (field names and values exactly as in the Avro contract)."""
    return json.dumps(dict(record), separators=(",", ":"), sort_keys=True).encode()


def dedup_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    """The same lifecycle event re-emitted (worker restart, rebalance) has the same key."""
    return record["alert_id"], record["status"], int(record["updated_at_ms"])


class SeenEvents:
    """Bounded memory of dedup keys: the oldest are forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[tuple[str, str, int], None] = OrderedDict()

    def add(self, key: tuple[str, str, int]) -> bool:
        """True when ``key`` is new (and remembers it)."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class ActiveAlerts:
    """Newest record of every incident still active, by fingerprint, for periodic re-sends.

    Alertmanager resolves an alert on its own once ``resolve_timeout`` passes without an update, so a
    forwarder must keep re-posting what is still firing (Prometheus does the same).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def update(self, record: Mapping[str, Any]) -> None:
        fingerprint = record["fingerprint"]
        self._records.pop(fingerprint, None)
        if record["status"] in ACTIVE_STATUSES:
            self._records[fingerprint] = dict(record)
            if len(self._records) > self.capacity:
                dropped = self._records.popitem(last=False)[1]
                log.warning("forward: more than %d active alerts; no longer re-sending %s",
                            self.capacity, dropped["alert_id"])

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff: initial_s, initial_s * multiplier, ... at most max_s, max_attempts tries."""

    max_attempts: int = 6
    initial_s: float = 0.5
    multiplier: float = 2.0
    max_s: float = 30.0
    timeout_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))


class DeliveryError(RuntimeError):
    """The receiver stayed unreachable or kept failing (5xx/429) for every attempt; worth trying later."""


class RejectedError(RuntimeError):
    """The receiver refused the payload (4xx other than 429); sending it again cannot succeed."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


@dataclass
class ForwardStats:
    """What happened to every alert event read; the forward command prints it on exit."""

    forwarded: int = 0  # alert events the receiver accepted
    duplicates: int = 0  # events seen before (same alert_id, status, updated_at_ms), not sent again
    replayed: int = 0  # events before the committed offset, read only to rebuild the active set
    resent: int = 0  # re-posts of still-active alerts (keep-alive for Alertmanager)
    rejected: int = 0  # events the receiver refused with a 4xx: logged with the answer, then skipped
    requests: int = 0  # successful HTTP requests
    retries: int = 0  # HTTP attempts after a failed one
    failed: int = 0  # requests that failed every attempt (their events stay uncommitted)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


Opener = Callable[[urllib.request.Request, float], Any]


def _urlopen(request: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(request, timeout=timeout)


@dataclass
class HttpPoster:
    """POSTs JSON with retries; ``opener`` and ``sleep`` are injectable so tests need no network or waiting."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    opener: Opener = _urlopen
    sleep: Callable[[float], None] = time.sleep
    stats: ForwardStats = field(default_factory=ForwardStats)

    def post(self, url: str, body: bytes) -> int:
        """POST ``body``; the HTTP status on success, else DeliveryError or RejectedError."""
        last_error = ""
        for attempt in range(1, self.policy.max_attempts + 1):
            if attempt > 1:
                self.stats.retries += 1
            try:
                status = self._once(url, body)
                self.stats.requests += 1
                return status
            except urllib.error.HTTPError as exc:
                detail = _read_error(exc)
                if exc.code != 429 and exc.code < 500:
                    raise RejectedError(exc.code, detail) from None
                last_error = f"HTTP {exc.code}: {detail[:200]}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.policy.max_attempts:
                delay = self.policy.delay(attempt)
                log.warning("forward: POST %s failed (%s); retry %d/%d in %.1f s", url, last_error, attempt,
                            self.policy.max_attempts - 1, delay)
                self.sleep(delay)
        self.stats.failed += 1
        raise DeliveryError(f"POST {url} failed {self.policy.max_attempts} times; last: {last_error}")

    def _once(self, url: str, body: bytes) -> int:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **self.headers}
        )
        with self.opener(request, self.policy.timeout_s) as response:
            response.read()
            return int(response.status)


def _read_error(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode(errors="replace")
    except Exception:  # a broken error body must not hide the status
        return ""


class AlertmanagerTarget:
    """Posts mapped alerts, one request per batch, to ``<base>/api/v2/alerts``."""

    def __init__(self, base_url: str, poster: HttpPoster, generator_url: str | None = None) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.poster = poster
        self.generator_url = generator_url

    def send(self, records: list[dict[str, Any]]) -> int:
        """Deliver ``records``; returns how many were rejected. DeliveryError: nothing is known delivered."""
        if not records:
            return 0
        try:
            self._post(records)
            return 0
        except RejectedError as exc:
            if len(records) == 1:
                _log_rejected(records[0], exc)
                return 1
        # One bad alert fails the whole request: isolate it so its batch-mates still get through.
        return sum(self.send([record]) for record in records)

    def _post(self, records: list[dict[str, Any]]) -> None:
        alerts = [alertmanager_alert(r, self.generator_url) for r in records]
        self.poster.post(self.url, json.dumps(alerts).encode())


class WebhookTarget:
    """Posts every record on its own, as the raw alert JSON (at least once: a retried batch may repeat some)."""

    def __init__(self, url: str, poster: HttpPoster) -> None:
        self.url = url
        self.poster = poster

    def send(self, records: list[dict[str, Any]]) -> int:
        rejected = 0
        for record in records:
            try:
                self.poster.post(self.url, webhook_body(record))
            except RejectedError as exc:
                _log_rejected(record, exc)
                rejected += 1
        return rejected


def _log_rejected(record: Mapping[str, Any], exc: RejectedError) -> None:
    log.error("forward: receiver refused alert %s (%s %s): %s; skipped", record.get("alert_id"),
              record.get("rule"), record.get("status"), exc)


class AlertForwarder:
    """Dedup, delivery and keep-alive for a stream of decoded alert records; the caller owns the consumer.

    An event counts as seen only once the receiver took it, so a batch that failed can be offered again
    unchanged. ``resend_s`` (Alertmanager only; 0 = never) re-posts the still-active incidents.
    """

    def __init__(self, target: AlertmanagerTarget | WebhookTarget, stats: ForwardStats, resend_s: float = 0.0,
                 seen: SeenEvents | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.stats = stats
        self.resend_s = resend_s
        self.seen = seen or SeenEvents()
        self.active = ActiveAlerts()
        self.clock = clock
        self._next_resend = clock() + resend_s

    def replay(self, record: Mapping[str, Any]) -> None:
        """An event delivered by an earlier run: only remembered (dedup, active set), not sent."""
        self.seen.add(dedup_key(record))
        self.active.update(record)
        self.stats.replayed += 1

    def forward(self, records: list[dict[str, Any]]) -> None:
        """Send the events not seen before; DeliveryError leaves every record unseen for a later retry."""
        fresh: list[dict[str, Any]] = []
        keys: set[tuple[str, str, int]] = set()
        duplicates = 0
        for record in records:
            key = dedup_key(record)
            if key in keys or key in self.seen:
                duplicates += 1
                continue
            keys.add(key)
            fresh.append(record)
        rejected = self.target.send(fresh)
        for record in fresh:
            self.seen.add(dedup_key(record))
            self.active.update(record)
        self.stats.rejected += rejected
        self.stats.forwarded += len(fresh) - rejected
        self.stats.duplicates += duplicates

    def resend_if_due(self) -> None:
        """Re-post active incidents every ``resend_s``; a failure is logged and tried at the next interval."""
        if not self.resend_s or self.clock() < self._next_resend:
            return
        self._next_resend = self.clock() + self.resend_s
        records = self.active.records()
        if not records:
            return
        try:
            self.target.send(records)
            self.stats.resent += len(records)
        except DeliveryError as exc:
            log.warning("forward: re-sending %d active alerts failed: %s", len(records), exc)
