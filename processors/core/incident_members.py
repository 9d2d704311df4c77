"""What an incident keeps of each member alert: a few fields of its alert.v1 record, and the series it is on.

Kept apart from the grouping (incidents.py): a member is built from, and updated by, the alert events of one
alert, whatever incident it belongs to. Its fields are persisted with the incident state (``to_dict``), so they
are a stored format: a new field needs a default for the state written before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from llmpulse.processors.core.alert_policy import ACKNOWLEDGED, FIRING, RESOLVED, SEVERITY_RANK

_STATUS_RANK = {FIRING: 0, ACKNOWLEDGED: 1, RESOLVED: 2}


@dataclass(slots=True)
class Member:
    # the alert's identity and series, which its later events never change ...
    alert_id: str
    rule: str
    service: str | None
    model: str | None
    provider: str | None
    started_at_ms: int
    # ... and what they may (``_news``)
    status: str
    severity: str
    summary: str
    observed: float
    updated_at_ms: int

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Member:
        """The member of an alert record (``AlertEvent.to_record()``, or alert.v1 off the topic)."""
        return cls(alert_id=str(record["alert_id"]), rule=str(record["rule"]), service=record.get("service"),
                   model=record.get("model"), provider=record.get("provider"),
                   started_at_ms=int(record["started_at_ms"]), **_news(record))

    def is_newer(self, record: Mapping[str, Any]) -> bool:
        """The record is a later event of this alert: updated later, or as late and further on (status, then
        severity); an event applied twice, or an old one after a new one, is not."""
        ours = (self.updated_at_ms, _STATUS_RANK.get(self.status, 0), SEVERITY_RANK.get(self.severity, 0))
        theirs = (int(record["updated_at_ms"]), _STATUS_RANK.get(str(record["status"]), 0),
                  SEVERITY_RANK.get(str(record["severity"]), 0))
        return theirs > ours

    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order (what ``dataclasses.asdict`` gives, without its deep copy: the fields
        are plain values, and an incident of thousands of members is written on every change)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def take(self, record: Mapping[str, Any]) -> None:
        """Take in a later event of this alert."""
        for name, value in _news(record).items():
            setattr(self, name, value)

    @property
    def series(self) -> tuple[str | None, str | None, str | None]:
        return self.service, self.model, self.provider


_FIELDS = tuple(f.name for f in fields(Member))


def _news(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a later event of the same alert may change (its identity and series never do)."""
    return {"status": str(record["status"]), "severity": str(record["severity"]), "summary": str(record["summary"]),
            "observed": float(record["observed"]), "updated_at_ms": int(record["updated_at_ms"])}


def same_series(a: Member, b: Member) -> bool:
    """Service, model and provider agree wherever both carry one (drift series have no provider, a service
    budget no model), and at least the service or the model is named on both sides (a global budget joins
    nothing this way)."""
    pairs = list(zip(a.series, b.series, strict=True))
    return (all(x is None or y is None or x == y for x, y in pairs)
            and any(x is not None and x == y for x, y in pairs[:2]))
