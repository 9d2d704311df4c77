"""Forward the alerts topic to Alertmanager (API v2) or to any JSON webhook.

The topic carries two kinds of record (schemas/alerts_topic.py): member alerts (alert.v1) and incidents
(incident.v1, what on-call pages on). Records reach this module decoded, with a ``kind`` key set to "alert" or
"incident" (a record without one is told apart by its fields). A webhook receives that record as JSON.

How records map onto Alertmanager alerts (labels, annotations, superseded label sets):
processors/alertmanager_mapping.py.

Delivery: ``HttpPoster`` retries connection errors, 429 and 5xx with capped exponential backoff and raises
``DeliveryError`` when the attempts run out, so the caller can keep its consumer offset and try again;
other 4xx answers can never succeed and raise ``RejectedError``. Nothing here touches Kafka.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmpulse.backoff import Backoff
from llmpulse.processors.alertmanager_mapping import (
    DedupKey,
    alertmanager_alert,
    dedup_key,
    ended,
    identity,
    is_active,
    record_id,
    record_kind,
    webhook_body,
)
from llmpulse.schemas.alerts_topic import ALERT_KIND, INCIDENT_KIND

log = logging.getLogger(__name__)



class SeenEvents:
    """Bounded memory of dedup keys: the oldest are forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[DedupKey, None] = OrderedDict()

    def add(self, key: DedupKey) -> bool:
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
    """Newest record of every alert and incident still active, by ``identity``, for periodic re-sends.

    Alertmanager resolves an alert on its own once ``resolve_timeout`` passes without an update, so a
    forwarder must keep re-posting what is still firing (Prometheus does the same).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def update(self, record: Mapping[str, Any]) -> None:
        key = identity(record)
        self._records.pop(key, None)
        if is_active(record):
            self._records[key] = dict(record)
            if len(self._records) > self.capacity:
                dropped = self._records.popitem(last=False)[1]
                log.warning("forward: more than %d active alerts; no longer re-sending %s %s",
                            self.capacity, record_kind(dropped), record_id(dropped))

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


class IncidentMembers:
    """Which incident each member alert belongs to, learnt from incident records (bounded; oldest forgotten).

    An incident record lists at most its first ``max_members_listed`` members; the others stay unknown here.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._incident_of: OrderedDict[str, str] = OrderedDict()

    def learn(self, record: Mapping[str, Any]) -> None:
        if record_kind(record) != INCIDENT_KIND:
            return
        for member in record.get("members") or ():
            self._incident_of.pop(member["alert_id"], None)
            self._incident_of[member["alert_id"]] = record["incident_id"]
        while len(self._incident_of) > self.capacity:
            self._incident_of.popitem(last=False)

    def incident_of(self, record: Mapping[str, Any]) -> str | None:
        """The incident of a member alert record, when an incident record listed it; None otherwise."""
        if record_kind(record) != ALERT_KIND:
            return None
        return self._incident_of.get(str(record["alert_id"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy(Backoff):
    """llmpulse's capped exponential backoff with the forwarder's numbers (6 tries, 0.5 s doubling up to 30 s, no
    jitter), and each POST's timeout."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0


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

    forwarded: int = 0  # events (alerts and incidents) the receiver accepted
    duplicates: int = 0  # events seen before (dedup_key), not sent again
    replayed: int = 0  # events before the committed offset, read only to rebuild the active set
    resent: int = 0  # re-posts of still-active alerts and incidents (keep-alive for Alertmanager)
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
                delay = self.policy.delay_s(attempt)
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
    """Posts mapped alerts, one request per batch, to ``<base>/api/v2/alerts``, ending superseded label sets.

    Remembers the alert last accepted for every live ``identity``, the incidents Alertmanager holds resolved,
    and which incident lists which member (module docstring: why a changed label set must end the old one, why
    a reopen that does not page is not posted).
    """

    def __init__(self, base_url: str, poster: HttpPoster, generator_url: str | None = None,
                 capacity: int = 10_000) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.poster = poster
        self.generator_url = generator_url
        self.capacity = capacity
        self.members = IncidentMembers()
        self._posted: OrderedDict[str, dict[str, Any]] = OrderedDict()  # identity -> live alert as accepted
        self._resolved: OrderedDict[str, None] = OrderedDict()  # identities of incidents resolved there

    def remember(self, record: Mapping[str, Any]) -> None:
        """An event an earlier run delivered: learn the label set Alertmanager holds for it, post nothing."""
        self._accept(self._alerts([record])[1])

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
        alerts, live = self._alerts(records)
        if alerts:
            self.poster.post(self.url, json.dumps(alerts).encode())
        self._accept(live)

    def _alerts(self, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any] | None]]:
        """The alerts to post for ``records``, in order, each after the end of the label set it supersedes;
        and, per identity, the alert live once they are accepted (None: none)."""
        alerts: list[dict[str, Any]] = []
        live: dict[str, dict[str, Any] | None] = {}
        for record in records:
            self.members.learn(record)
            key = identity(record)
            if record_kind(record) == INCIDENT_KIND and is_active(record) and not record["paging"] and (
                    live[key] is None if key in live else key in self._resolved):
                live[key] = None  # a resolved incident reopened without paging stays resolved in Alertmanager
                continue
            alert = alertmanager_alert(record, self.generator_url, self.members.incident_of(record))
            before = live[key] if key in live else self._posted.get(key)
            if before is not None and before["labels"] != alert["labels"]:
                alerts.append(ended(before, int(record["updated_at_ms"])))
            alerts.append(alert)
            live[key] = alert if is_active(record) else None
        return alerts, live

    def _accept(self, live: dict[str, dict[str, Any] | None]) -> None:
        for key, alert in live.items():
            self._posted.pop(key, None)
            self._resolved.pop(key, None)
            if alert is not None:
                self._posted[key] = alert
            elif key.startswith(f"{INCIDENT_KIND}/"):
                self._resolved[key] = None
        for remembered in (self._posted, self._resolved):
            while len(remembered) > self.capacity:
                remembered.popitem(last=False)


class WebhookTarget:
    """Posts every record on its own, as its raw JSON with ``kind`` (at least once: a retried batch may repeat
    some)."""

    def __init__(self, url: str, poster: HttpPoster) -> None:
        self.url = url
        self.poster = poster

    def remember(self, record: Mapping[str, Any]) -> None:
        """Nothing to learn: a webhook gets each record as it is."""

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
    log.error("forward: receiver refused %s %s (%s %s): %s; skipped", record_kind(record), record_id(record),
              record.get("rule") or record.get("scope_key"), record.get("status"), exc)


class AlertForwarder:
    """Dedup, delivery and keep-alive for a stream of decoded records of the alerts topic (alerts and
    incidents, each with its ``kind``); the caller owns the consumer.

    An event counts as seen only once the receiver took it, so a batch that failed can be offered again
    unchanged. ``resend_s`` (Alertmanager only; 0 = never) re-posts the still-active alerts and incidents.
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
        """An event delivered by an earlier run: only remembered (dedup, active set, label sets), not sent."""
        self.seen.add(dedup_key(record))
        self.active.update(record)
        self.target.remember(record)
        self.stats.replayed += 1

    def forward(self, records: list[dict[str, Any]]) -> None:
        """Send the events not seen before; DeliveryError leaves every record unseen for a later retry."""
        fresh: list[dict[str, Any]] = []
        keys: set[DedupKey] = set()
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
        """Re-post what is active every ``resend_s``; a failure is logged and tried at the next interval."""
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
