"""A/B experiments: streaming mean and variance per (experiment, variant) of latency, cost and confidence,
Welch's t-test and Cohen's d of each variant against the control once both arms have ``min_samples``.

A variant is a regression when it is significantly worse (p < ``alpha``) with at least a small effect
(|d| >= ``min_effect``): slower, costlier or less confident (seed 003).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.abtest import Welford, cohens_d, welch_t_test
from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.keyed_state import KeyedState

METRICS = ("latency", "cost", "confidence")
WORSE_WHEN_HIGHER = {"latency": True, "cost": True, "confidence": False}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    control_variants: tuple[str, ...] = ("control", "a", "baseline")
    min_samples: int = 50
    alpha: float = 0.01
    min_effect: float = 0.2


class ArmStats:
    """Welford moments of every metric for one (experiment, variant)."""

    def __init__(self) -> None:
        self.moments = {metric: Welford() for metric in METRICS}

    def to_bytes(self) -> bytes:
        return b"".join(self.moments[m].to_bytes() for m in METRICS)

    @classmethod
    def from_bytes(cls, blob: bytes) -> ArmStats:
        out = cls()
        size = len(Welford().to_bytes())
        for i, metric in enumerate(METRICS):
            out.moments[metric] = Welford.from_bytes(blob, i * size)
        return out


_KEY = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Comparison:
    experiment: str
    variant: str
    metric: str
    t: float
    p_value: float
    effect_size: float
    control_mean: float
    variant_mean: float
    regression: bool


class ExperimentMonitor:
    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.state: KeyedState[ArmStats] = KeyedState("experiments", lambda _key: ArmStats(), ArmStats.from_bytes)
        self._arms: dict[str, set[str]] = {}

    def restore(self, key: str, blob: bytes) -> None:
        self.state.restore(key, blob)
        experiment, _, variant = key.partition("\x1f")
        self._arms.setdefault(experiment, set()).add(variant)

    def update(self, experiment: np.ndarray, variant: np.ndarray, values: dict[str, np.ndarray],
               offset: int) -> set[str]:
        """Absorb calls that belong to an experiment; returns the experiments touched."""
        in_experiment = (experiment != None) & (variant != None)  # noqa: E711
        if not in_experiment.any():
            return set()
        rows = np.flatnonzero(in_experiment)
        keys = np.array([f"{e}\x1f{v}" for e, v in zip(experiment[rows], variant[rows], strict=True)], dtype=object)
        touched = set()
        for key in np.unique(keys).tolist():
            arm = self.state.for_update(key, offset)
            exp, _, var = key.partition("\x1f")
            self._arms.setdefault(exp, set()).add(var)
            touched.add(exp)
            if arm is None:
                continue
            member = rows[keys == key]
            for metric in METRICS:
                column = values[metric][member]
                arm.moments[metric].update(column[~np.isnan(column)])
        return touched

    def compare(self, experiment: str) -> list[Comparison]:
        arms = self._arms.get(experiment, set())
        control = next((v for v in self.config.control_variants if v in arms), None)
        if control is None:
            return []
        base = self.state.get(f"{experiment}\x1f{control}")
        out = []
        for variant in sorted(arms - {control}):
            arm = self.state.get(f"{experiment}\x1f{variant}")
            if base is None or arm is None:
                continue
            for metric in METRICS:
                a, b = base.moments[metric], arm.moments[metric]
                if min(a.count, b.count) < self.config.min_samples:
                    continue
                test = welch_t_test(b, a)
                d = cohens_d(b, a)
                worse = (b.mean > a.mean) == WORSE_WHEN_HIGHER[metric]
                regression = worse and test.p_value < self.config.alpha and abs(d) >= self.config.min_effect
                out.append(Comparison(experiment, variant, metric, test.t, test.p_value, d, a.mean, b.mean,
                                      regression))
        return out

    def observe(self, experiment: str, now_ms: int) -> list[Observation]:
        out = []
        for c in self.compare(experiment):
            out.append(Observation(
                "ab_regression", (("experiment", c.experiment), ("variant", c.variant), ("metric", c.metric)),
                "WARNING" if c.regression else None, c.effect_size, self.config.min_effect, "experiment",
                f"{c.experiment}/{c.variant} {c.metric} {c.variant_mean:.4g} vs control {c.control_mean:.4g} "
                f"(Cohen's d {c.effect_size:+.2f}, Welch p={c.p_value:.2g})", now_ms,
            ))
        return out

    def experiments(self) -> list[str]:
        return list(self._arms)
