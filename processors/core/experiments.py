"""A/B experiments: streaming mean and variance per (experiment, variant) of latency, cost, confidence and
quality (feedback scores joined to the calls, quality.py), each variant against the control once both arms
have ``min_samples``.

Decisions use an always-valid sequential test (sequential.py, mSPRT): the experiment is re-evaluated after
every record, and the running minimum of its p-value is kept with the arm, so looking again and again keeps
the false-positive rate at ``alpha``. Welch's p-value and Cohen's d stay as descriptive figures. A variant is
a regression when it is significantly worse with at least a small effect (|d| >= ``min_effect``): slower,
costlier, less confident or lower quality (seed 003); an improvement when significantly better. The winner
of an experiment is the arm significantly best on quality: the variant with the largest significant
improvement, or the control when every variant is significantly worse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from llmpulse.processors.core.abtest import Welford, cohens_d, welch_t_test
from llmpulse.processors.core.alert_policy import Observation
from llmpulse.processors.core.keyed_state import KeyedState
from llmpulse.processors.core.sequential import MIXTURE_SD, msprt

METRICS = ("latency", "cost", "confidence", "quality")
WORSE_WHEN_HIGHER = {"latency": True, "cost": True, "confidence": False, "quality": False}
PRIMARY_METRIC = "quality"  # the winner is decided on it


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    control_variants: tuple[str, ...] = ("control", "a", "baseline")  # variant names that mean "the control"
    min_samples: int = 50  # calls in each arm before a metric is compared
    alpha: float = 0.05  # always-valid: holds however often the experiment is looked at
    min_effect: float = 0.2  # |Cohen's d| a significant difference needs to count (0.2: a small effect)
    mixture_sd: float = MIXTURE_SD  # the mSPRT mixture's spread, in pooled standard deviations


_VERDICT = struct.Struct("<dd")


class ArmStats:
    """Welford moments of every metric for one (experiment, variant), and per metric the running minimum of
    the always-valid p-value against the control with the sign of the difference when it was reached."""

    def __init__(self) -> None:
        self.moments = {metric: Welford() for metric in METRICS}
        self.verdicts = {metric: (1.0, 0.0) for metric in METRICS}

    def to_bytes(self) -> bytes:
        return (b"".join(self.moments[m].to_bytes() for m in METRICS)
                + b"".join(_VERDICT.pack(*self.verdicts[m]) for m in METRICS))

    @classmethod
    def from_bytes(cls, blob: bytes) -> ArmStats:
        """Also reads blobs written before quality and verdicts existed (latency, cost, confidence only)."""
        out = cls()
        size = len(Welford().to_bytes())
        stored = min(len(METRICS), len(blob) // size)
        for i, metric in enumerate(METRICS[:stored]):
            out.moments[metric] = Welford.from_bytes(blob, i * size)
        if len(blob) == len(METRICS) * (size + _VERDICT.size):
            for i, metric in enumerate(METRICS):
                out.verdicts[metric] = _VERDICT.unpack_from(blob, len(METRICS) * size + i * _VERDICT.size)
        return out


_KEY = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Comparison:
    experiment: str
    variant: str
    metric: str  # one of METRICS
    t: float  # Welch's t, variant against control
    p_value: float  # always-valid (running minimum over every look)
    effect_size: float  # Cohen's d, variant against control
    control_mean: float
    variant_mean: float
    regression: bool
    improvement: bool = False
    welch_p: float = float("nan")  # one look, descriptive only
    lower: float = float("nan")  # always-valid confidence sequence for variant - control
    upper: float = float("nan")
    samples: int = 0  # the smaller arm


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
                if metric in values:
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
                sequential = msprt(b, a, self.config.alpha, self.config.mixture_sd)
                best_p, sign = arm.verdicts[metric]
                if sequential is not None and sequential.p_value < best_p:
                    best_p, sign = sequential.p_value, float(np.sign(sequential.difference))
                lower, upper = (sequential.lower, sequential.upper) if sequential else (float("nan"),) * 2
                significant = best_p < self.config.alpha and abs(d) >= self.config.min_effect and sign != 0
                worse = (sign > 0) == WORSE_WHEN_HIGHER[metric]
                out.append(Comparison(experiment, variant, metric, test.t, best_p, d, a.mean, b.mean,
                                      significant and worse, significant and not worse, test.p_value, lower, upper,
                                      min(a.count, b.count)))
        return out

    def observe(self, experiment: str, now_ms: int) -> list[Observation]:
        """Regressions, improvements and the winner; keeps each comparison's running-minimum p-value."""
        out = []
        comparisons = self.compare(experiment)
        for c in comparisons:
            self._keep_verdict(c)
            labels = (("experiment", c.experiment), ("variant", c.variant), ("metric", c.metric))
            figures = (f"{c.experiment}/{c.variant} {c.metric} {c.variant_mean:.4g} vs control {c.control_mean:.4g} "
                       f"(Cohen's d {c.effect_size:+.2f}, always-valid p={c.p_value:.2g}, n={c.samples})")
            out.append(Observation("ab_regression", labels, "WARNING" if c.regression else None, c.effect_size,
                                   self.config.min_effect, "experiment", figures, now_ms))
            out.append(Observation("ab_improvement", labels, "INFO" if c.improvement else None, c.effect_size,
                                   self.config.min_effect, "experiment", figures, now_ms))
        winner = _winner([c for c in comparisons if c.metric == PRIMARY_METRIC], self._control(experiment))
        if winner is not None:
            arm, c = winner
            out.append(Observation(
                "ab_winner", (("experiment", experiment), ("variant", arm)), "INFO", c.effect_size,
                self.config.min_effect, "experiment",
                f"{experiment}: {arm} wins on {PRIMARY_METRIC} ({c.variant}: {c.variant_mean:.4g} vs control "
                f"{c.control_mean:.4g}, always-valid p={c.p_value:.2g}, n={c.samples} per arm)", now_ms))
        return out

    def _keep_verdict(self, c: Comparison) -> None:
        key = f"{c.experiment}\x1f{c.variant}"
        arm = self.state.get(key)
        if arm is not None and c.p_value < arm.verdicts[c.metric][0]:
            arm.verdicts[c.metric] = (c.p_value, float(np.sign(c.variant_mean - c.control_mean)))
            self.state.touch(key)

    def _control(self, experiment: str) -> str:
        arms = self._arms.get(experiment, set())
        return next((v for v in self.config.control_variants if v in arms), "control")

    def experiments(self) -> list[str]:
        return list(self._arms)


def _winner(quality: list[Comparison], control: str) -> tuple[str, Comparison] | None:
    """The variant with the largest significant quality improvement, or the control when every variant is
    significantly worse; None while undecided."""
    better = [c for c in quality if c.improvement]
    if better:
        best = max(better, key=lambda c: c.variant_mean)
        return best.variant, best
    if quality and all(c.regression for c in quality):
        return control, max(quality, key=lambda c: c.variant_mean)
    return None
