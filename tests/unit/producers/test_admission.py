"""The admission gate's decisions, with a fake clock and budget states fed by hand (no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from llmpulse.producers.admission import AdmissionGate, AdmissionSettings, BudgetExceeded
from llmpulse.producers.budget_state import BudgetStateFollower
from llmpulse.producers.prices import PriceTable, cost_micros

NOW = 1_800_000_000.0  # seconds
HOUR_MS = 3_600_000
PRICES = PriceTable({"gpt-4o": {"input": 2.5, "output": 10}}, catalogue=False)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Follower(BudgetStateFollower):
    """The real view, fed records directly and always reachable."""

    def __init__(self) -> None:
        super().__init__(None)
        self._reachable = True
        self._ready.set()


def state(scope: str, key: str, spent: int, limit: int, *, period: str = "hour", at: float = NOW,
          end_ms: int | None = None) -> dict[str, Any]:
    start = int(at * 1000) // HOUR_MS * HOUR_MS
    return {"scope": scope, "key": key, "period": period, "bucket_start_ms": start,
            "bucket_end_ms": end_ms or start + HOUR_MS, "spent_micros": spent, "limit_micros": limit,
            "state": "exhausted" if spent >= limit else ("warning" if spent * 5 >= limit * 4 else "ok"),
            "projected_exhaustion_ms": None, "updated_at_ms": int(at * 1000)}


def gate(mode: str = "enforce", follower: BudgetStateFollower | None = None, **settings: Any) -> tuple[
        AdmissionGate, list[dict[str, Any]], Clock]:
    recorded: list[dict[str, Any]] = []
    clock = Clock()
    defaults: dict[str, Any] = {"max_request_cost_usd": 0.50, "max_tokens_per_request": None,
                                "max_average_tokens": None, "user_requests_per_minute": None,
                                "max_state_age_s": 15.0, "fail_closed": False, "default_max_output_tokens": 1024}
    s = AdmissionSettings(mode=mode, **{**defaults, **settings})
    follower = follower if follower is not None else Follower()
    if isinstance(follower, Follower) and not follower._entries:
        follower.apply_record(state("global", "all", 0, 10_000_000))
    return AdmissionGate(s, follower, lambda **f: recorded.append(f), PRICES, clock), recorded, clock


def admit(g: AdmissionGate, **kw: Any) -> Any:
    args = {"service": "search", "user": "u1", "model": "gpt-4o", "provider": "openai",
            "estimated_input_tokens": 1000, "max_output_tokens": 500, **kw}
    return g.admit(**args)


def test_an_exhausted_budget_denies_until_its_bucket_ends_and_each_denial_is_recorded() -> None:
    g, recorded, clock = gate()
    assert admit(g).allowed
    g.budgets.apply_record(state("service", "search", 5_000_000, 5_000_000))  # type: ignore[union-attr]
    decision = admit(g)
    assert not decision.allowed and (decision.scope, decision.key, decision.period) == ("service", "search", "hour")
    end_s = (int(NOW * 1000) // HOUR_MS * HOUR_MS + HOUR_MS) / 1000
    assert decision.retry_after_s == pytest.approx(end_s - NOW)
    assert admit(g, service="other").allowed  # another service's budget is not this one's
    assert recorded[0]["status"] == "denied" and recorded[0]["cost_micros"] == 0
    assert recorded[0]["error_type"] == "budget_exhausted" and recorded[0]["service"] == "search"
    g.budgets.apply_record(state("global", "all", 1, 10_000_000, at=end_s + 1))  # type: ignore[union-attr]
    clock.now = end_s + 1  # the next hour: the old bucket's exhaustion no longer applies
    assert admit(g).allowed
    assert g.stats().denied == 1


@pytest.mark.parametrize("scope,key", [("global", "all"), ("user", "u1"), ("model", "gpt-4o")])
def test_every_scope_denies(scope: str, key: str) -> None:
    g, _, _ = gate()
    g.budgets.apply_record(state(scope, key, 2, 1))  # type: ignore[union-attr]
    assert admit(g).scope == scope


def test_a_budget_back_under_its_limit_allows_again() -> None:
    g, _, _ = gate()
    g.budgets.apply_record(state("user", "u1", 2, 1))  # type: ignore[union-attr]
    g.budgets.apply_record(state("user", "u1", 2, 10))  # type: ignore[union-attr]  # limit raised
    assert admit(g).allowed


def test_observe_counts_what_enforce_would_deny_and_records_nothing() -> None:
    g, recorded, _ = gate("observe")
    g.budgets.apply_record(state("global", "all", 2, 1))  # type: ignore[union-attr]
    decision = admit(g)
    assert decision.allowed and decision.would_deny and decision.scope == "global"
    assert g.stats().would_deny == 1 and not recorded


def test_off_checks_nothing() -> None:
    g, _, _ = gate("off")
    g.budgets.apply_record(state("global", "all", 2, 1))  # type: ignore[union-attr]
    assert admit(g, estimated_input_tokens=10**7).allowed and g.stats().checked == 0


def test_per_request_cost_cap_prices_estimated_tokens_exactly() -> None:
    g, _, _ = gate()
    rate = PRICES.rate("openai", "gpt-4o")
    assert rate is not None
    # $2.50/M in, $10/M out: 100,000 in + 25,000 out = $0.25 + $0.25 = exactly the $0.50 cap -> allowed
    assert cost_micros(rate, 100_000, 25_000) == 500_000
    assert admit(g, estimated_input_tokens=100_000, max_output_tokens=25_000).allowed
    over = admit(g, estimated_input_tokens=100_000, max_output_tokens=25_001)
    assert not over.allowed and over.reason == "request_cost" and over.retry_after_s is None
    assert admit(g, model="unpriced-model", estimated_input_tokens=10**7).allowed  # no price: cap cannot judge
    assert g.stats().unpriced == 1


def test_token_limits_per_request_and_on_average() -> None:
    g, _, _ = gate(max_tokens_per_request=2000, max_average_tokens=500, average_window=4)
    assert admit(g, estimated_input_tokens=1500, max_output_tokens=600).reason == "request_tokens"
    assert admit(g, estimated_input_tokens=200, max_output_tokens=100).allowed  # 300
    assert admit(g, estimated_input_tokens=400, max_output_tokens=200).allowed  # mean (300+600)/2 = 450
    assert admit(g, estimated_input_tokens=500, max_output_tokens=200).reason == "average_tokens"  # 533
    assert admit(g, estimated_input_tokens=400, max_output_tokens=200).allowed  # mean of 300, 600, 600 = 500


def test_per_user_request_rate_refills_with_time() -> None:
    g, _, clock = gate(user_requests_per_minute=2)
    assert admit(g).allowed and admit(g).allowed
    denied = admit(g)
    assert denied.reason == "user_rate" and denied.retry_after_s == pytest.approx(30.0)
    assert admit(g, user="u2").allowed
    clock.now += 30
    assert admit(g).allowed


def test_stale_state_fails_open_by_default_and_closed_when_set() -> None:
    g, _, clock = gate()
    g.budgets.apply_record(state("global", "all", 2, 1))  # type: ignore[union-attr]
    clock.now += 16  # newest record older than max_state_age_s
    assert admit(g).allowed and g.stats().stale == 1
    closed, recorded, clock = gate(fail_closed=True)
    clock.now += 16
    decision = admit(closed)
    assert decision.reason == "budget_state_unavailable" and recorded[0]["error_type"] == decision.reason


def test_no_topic_at_all_fails_open() -> None:
    g, _, _ = gate(follower=BudgetStateFollower(None))
    assert admit(g).allowed and g.stats().stale == 1


def test_an_internal_failure_allows_and_is_counted() -> None:
    class Broken(Follower):
        def fresh(self, max_age_s: float, now_ms: int) -> bool:
            raise RuntimeError("bug")

    g, _, _ = gate(follower=Broken())
    assert admit(g).allowed and g.stats().errors == 1


def test_budget_exceeded_carries_what_the_caller_needs() -> None:
    g, _, _ = gate()
    g.budgets.apply_record(state("model", "gpt-4o", 2, 1, period="hour"))  # type: ignore[union-attr]
    error = BudgetExceeded(admit(g))
    assert (error.scope, error.key, error.period) == ("model", "gpt-4o", "hour") and error.retry_after > 0
    assert admit(g).retry_after_header().isdigit()
