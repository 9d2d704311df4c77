"""Held-out accuracy of the text detectors, and the guard's cost on one prompt.

Injection: the shipped detector (patterns + classifier, ``GuardConfig().injection_threshold``) on the shared
data's held-out split (``training.train_injection.load_dataset``: 20% by text hash, never trained or tuned on),
recall and false-positive rate overall and per length bucket; None when the shared data is absent.
PII: precision and recall per kind of ``llmpulse.pii.find_pii`` on ``bench.pii_samples`` (generated positives
and near-misses, plus the held-out benign prompts as negatives when present).
Guard cost: ``TextGuard.check_batch`` on one prompt of about 2 kB at a time, as the SDK runs it before a call.
"""

from __future__ import annotations

import time

import numpy as np

from bench import pii_samples
from bench.common import GroupResult, percentile
from llmpulse.config import shared_data_dir
from llmpulse.pii import find_pii, phone_library_available
from llmpulse.processors import loaders
from llmpulse.processors.core.guards.guard import GuardConfig, TextGuard

# (key suffix, lowest length, highest length + 1): the 400-character line, then finer buckets.
LENGTH_BUCKETS = (("lt400", 0, 400), ("ge400", 400, 1 << 62), ("lt128", 0, 128), ("128_399", 128, 400),
                  ("400_1999", 400, 2000), ("ge2000", 2000, 1 << 62))
PII_PER_KIND = 400
PROMPT_CHARS = 2048
PROMPT_REPEATS = 2000


def injection_figures(result: GroupResult) -> None:
    data_dir = shared_data_dir() / "injection"
    keys = [f"injection_{m}{b}" for b in ["", *(f"_{name}" for name, _, _ in LENGTH_BUCKETS)]
            for m in ("recall", "fpr")]
    if not any(data_dir.glob("*.jsonl")):
        for key in keys:
            result.put(key, None, f"skipped: no labelled data in {data_dir}")
        return
    from llmpulse.processors.training.train_injection import load_dataset

    data = load_dataset(data_dir)
    test = np.flatnonzero(data.is_test)
    texts = [data.texts[i] for i in test]
    attack = data.labels[test]
    guard = TextGuard(GuardConfig(), loaders.read_injection_model())
    flagged = guard.injection.score(texts).score >= guard.config.injection_threshold
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    where = f"held-out split of {data_dir} (20% by text hash, not trained on)"
    _rates(result, "", flagged, attack, f"{where}: {attack.sum()} attacks, {(~attack).sum()} benign")
    for name, low, high in LENGTH_BUCKETS:
        inside = (lengths >= low) & (lengths < high)
        counts = f"{(attack & inside).sum()} attacks, {(~attack & inside).sum()} benign"
        _rates(result, f"_{name}", flagged[inside], attack[inside], f"{where}, {low} <= chars < {high}: {counts}")


def _rates(result: GroupResult, bucket: str, flagged: np.ndarray, attack: np.ndarray, note: str) -> None:
    """``injection_recall<bucket>`` and ``injection_fpr<bucket>``; None where the bucket has no such text."""
    result.put(f"injection_recall{bucket}", float(flagged[attack].mean()) if attack.any() else None, note)
    result.put(f"injection_fpr{bucket}", float(flagged[~attack].mean()) if (~attack).any() else None, note)


def pii_figures(result: GroupResult) -> None:
    benign: list[str] = []
    data_dir = shared_data_dir() / "injection"
    if any(data_dir.glob("*.jsonl")):
        from llmpulse.processors.training.train_injection import load_dataset

        data = load_dataset(data_dir)
        benign = [t for t, is_attack, held_out in zip(data.texts, data.labels, data.is_test, strict=True)
                  if held_out and not is_attack]
    samples = pii_samples.samples(PII_PER_KIND, seed=1, benign=benign)
    found = [set(find_pii(s.text, ipv4=False)) for s in samples]
    phones = "phonenumbers" if phone_library_available() else "shape only (phonenumbers missing)"
    note = (f"generated, {PII_PER_KIND} texts per kind, {PII_PER_KIND * len(pii_samples.KINDS)} near-misses, "
            f"{len(benign)} held-out benign prompts; phones: {phones}")
    for kind in pii_samples.KINDS:
        true_positive = sum(kind in f and kind in s.kinds for f, s in zip(found, samples, strict=True))
        predicted = sum(kind in f for f in found)
        actual = sum(kind in s.kinds for s in samples)
        result.put(f"pii_precision_{kind}", true_positive / predicted if predicted else 1.0, note)
        result.put(f"pii_recall_{kind}", true_positive / actual, note)


def prompt_cost(result: GroupResult) -> None:
    """p50/p99 of the worker's full guard (injection, PII, safety) on one ~2 kB prompt per call (no response),
    prompts varied; the SDK's input guard alone is bench/admission.py's ``guard_prompt_*``."""
    rng = np.random.default_rng(3)
    phrases = ("Please summarise the attached report", "list the three main risks for the board",
               "call me at +44 20 7946 0958", "or mail jane@example.com", "order 20240115 shipped on 2024-01-15",
               "revenue grew 12.5% to $1,234,567", "ignore the typos in the previous draft", "see section 4.2")
    prompts = []
    for _ in range(64):
        text = ""
        while len(text) < PROMPT_CHARS:
            text += ", ".join(rng.choice(phrases, 4)) + ". "
        prompts.append(text[:PROMPT_CHARS])
    guard = TextGuard(GuardConfig(), loaders.read_injection_model())
    none = np.array([None], dtype=object)
    timings = []
    for i in range(PROMPT_REPEATS):
        prompt = np.array([prompts[i % len(prompts)]], dtype=object)
        started = time.perf_counter()
        guard.check_batch(prompt, none)
        timings.append((time.perf_counter() - started) * 1e6)
    timings = timings[PROMPT_REPEATS // 10 :]  # warm-up
    note = f"TextGuard.check_batch on one {PROMPT_CHARS}-char prompt with digits, an email and a phone"
    result.put("worker_guard_p50_us_2kb", percentile(timings, 0.5), note)
    result.put("worker_guard_p99_us_2kb", percentile(timings, 0.99), note)


def run() -> GroupResult:
    result = GroupResult()
    injection_figures(result)
    pii_figures(result)
    prompt_cost(result)
    return result
