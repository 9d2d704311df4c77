"""Train the tier-2 prompt-injection classifier and write ``processors/data/injection_model.npz``.

Usage (from the repository root, with the dev extra installed: scipy is used for the optimiser only)::

    python -m llmpulse.processors.training.train_injection [--data DIR] [--out FILE]

Data provenance: the labelled texts are read in place from ``../shared/data/injection/*.jsonl`` (one
JSON object a line: ``text``, ``source``, ``label`` = ``attack`` | ``benign``); where each row comes from,
and under which licence, is recorded in ``../shared/data/injection/SOURCES.md``. The data is never copied
into this project.
Some sources are non-commercial or unlicensed: check SOURCES.md before shipping weights trained on them.

Method: rows are split deterministically by a hash of their text (20% held out); the model is an
L2-regularised, class-balanced logistic regression over ``classifier.featurize`` vectors of the texts with their
encoded payloads decoded (``guards.decoding``, as ``InjectionDetector`` reads them), fitted on the
training split only. Each feature is first scaled by the square root of the magnitude of its naive-Bayes
log-count ratio (after NBSVM, Wang & Manning 2012, "Baselines and Bigrams"), so the L2 penalty shrinks features
that occur about as often in both classes harder than telling ones; the shipped weights fold the scale in, so
inference is the same dot product. The square root, not NBSVM's full ratio: the full ratio scored best by CV
but let words that only the attack sources use ("password", "access" of the Tensor Trust game) flag ordinary
support prompts such as the simulator's "How do I reset my password?" (p 0.80); the root keeps most of the CV
gain at p < 0.5 on them. Regularisation, the ratio's smoothing and the operating point are chosen by 5-fold
cross-validation grouped by text hash inside the training split (``cross_validated_decisions``); the held-out
split is scored once, at the end, and never used to choose anything.
Because attacks in this set are ~8x longer than benign texts, features carry no length signal (unit-norm
vectors) and the report breaks precision/recall down by length bucket and on a length-matched subsample.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llmpulse.config import shared_data_dir
from llmpulse.processors.core.guards.classifier import (
    HasherConfig,
    InjectionClassifier,
    SparseBatch,
    featurize,
)
from llmpulse.processors.core.guards.decoding import with_decoded
from llmpulse.processors.core.guards.injection import InjectionDetector
from llmpulse.processors.loaders import INJECTION_MODEL, read_injection_model, write_injection_model

DEFAULT_DATA_DIR = shared_data_dir() / "injection"
TEST_PERCENT = 20
LENGTH_EDGES = (128, 400, 2000)  # buckets: <128, 128-399, 400-1999, >=2000 chars (the 400 line)
LENGTH_NAMES = ("<128", "128-399", "400-1999", ">=2000")
CV_FOLDS = 5


class Dataset(NamedTuple):
    texts: list[str]
    labels: np.ndarray  # bool: True = attack
    is_test: np.ndarray  # bool


class Scores(NamedTuple):
    precision: float
    recall: float
    f1: float
    n_attack: int
    n_benign: int


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def load_dataset(data_dir: Path = DEFAULT_DATA_DIR) -> Dataset:
    """All rows of ``*.jsonl`` in ``data_dir`` with the deterministic held-out split."""
    texts: list[str] = []
    labels: list[bool] = []
    for path in sorted(data_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    texts.append(row["text"])
                    labels.append(row["label"] == "attack")
    is_test = np.array([_text_hash(t) % 100 < TEST_PERCENT for t in texts], dtype=bool)
    return Dataset(texts, np.array(labels, dtype=bool), is_test)


def scores(predicted: np.ndarray, truth: np.ndarray) -> Scores:
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, int(truth.sum()), int((~truth).sum()))


def length_buckets(texts: Sequence[str]) -> np.ndarray:
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return np.searchsorted(np.array(LENGTH_EDGES), lengths, side="right")


def length_matched(texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """Indices of a subsample with equally many attacks and benign texts in every power-of-two length bin."""
    lengths = np.fromiter(map(len, texts), dtype=np.float64, count=len(texts))
    bins = np.floor(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    order = np.argsort([_text_hash(t) for t in texts], kind="stable")  # deterministic pick within a bin
    picked: list[np.ndarray] = []
    for b in np.unique(bins):
        attack = order[(bins[order] == b) & labels[order]]
        benign = order[(bins[order] == b) & ~labels[order]]
        k = min(len(attack), len(benign))
        picked += [attack[:k], benign[:k]]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def report(
    predict: Callable[[list[str]], np.ndarray], texts: list[str], labels: np.ndarray
) -> dict[str, Scores]:
    """Scores overall, per length bucket and on the length-matched subsample for a bool predictor."""
    predicted = predict(texts)
    out = {"overall": scores(predicted, labels)}
    buckets = length_buckets(texts)
    for i, name in enumerate(LENGTH_NAMES):
        mask = buckets == i
        out[f"len {name}"] = scores(predicted[mask], labels[mask])
    matched = length_matched(texts, labels)
    out["length-matched"] = scores(predicted[matched], labels[matched])
    return out


def long_benign(texts: Sequence[str], target_lengths: np.ndarray, seed: int = 0) -> list[str]:
    """Synthetic benign texts as long as ``target_lengths``: random benign texts joined by blank lines.

    Training on these (and reporting on ones built from held-out texts) stops the model from reading
    "long" as "attack", the shortcut this data set invites.
    """
    rng = np.random.default_rng(seed)
    out = []
    for target in target_lengths:
        parts: list[str] = []
        while sum(map(len, parts)) < target:
            parts.append(texts[rng.integers(len(texts))])
        out.append("\n\n".join(parts))
    return out


def augmented(
    texts: list[str], labels: np.ndarray, n_extra: int, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """``texts`` plus ``n_extra`` long benign texts whose lengths follow the attacks' lengths."""
    attack_lengths = np.array([len(t) for t, is_attack in zip(texts, labels, strict=True) if is_attack])
    benign = [t for t, is_attack in zip(texts, labels, strict=True) if not is_attack]
    rng = np.random.default_rng(seed)
    extra = long_benign(benign, rng.choice(attack_lengths[attack_lengths > 256], n_extra), seed)
    return texts + extra, np.concatenate((labels, np.zeros(n_extra, dtype=bool)))


def _csr(batch: SparseBatch, n_features: int):  # type: ignore[no-untyped-def]
    from scipy.sparse import csr_matrix

    return csr_matrix((batch.value, (batch.doc, batch.bucket)), shape=(batch.n_docs, n_features))


def nb_scale(x, labels: np.ndarray, alpha: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """sqrt(|log-count ratio|) per feature: |log((p / |p|_1) / (q / |q|_1))| ** 0.5, p and q the number of attack
    and benign texts holding the feature, each plus ``alpha`` (NBSVM's smoothing; 0.25 chosen by 5-fold CV)."""
    present = x.copy()
    present.data = (present.data > 0).astype(np.float64)
    p = alpha + np.asarray(present[labels].sum(axis=0)).ravel()
    q = alpha + np.asarray(present[~labels].sum(axis=0)).ravel()
    return np.sqrt(np.abs(np.log(p / p.sum()) - np.log(q / q.sum())))


def fit(
    texts: list[str], labels: np.ndarray, config: HasherConfig, l2: float = 1e-4, nb_alpha: float | None = 0.25
) -> InjectionClassifier:
    """Class-balanced, L2-regularised logistic regression fitted with L-BFGS.

    ``nb_alpha``: when set, features are scaled by ``nb_scale`` before fitting (a per-feature L2 penalty of
    l2 / scale**2) and the scale is folded into the returned weights; None fits the plain model.
    """
    from scipy.optimize import minimize
    from scipy.sparse import diags

    n_features = 1 << config.bits
    x = _csr(featurize(with_decoded(texts)[0], config), n_features)  # as InjectionDetector reads them
    scale = nb_scale(x, labels, nb_alpha) if nb_alpha is not None else np.ones(n_features)
    x = (x @ diags(scale)).tocsr()
    x_t = x.T.tocsr()
    y = labels.astype(np.float64)
    # Balanced weights: each class contributes half of the loss, whatever its count.
    w_sample = np.where(labels, 0.5 / labels.sum(), 0.5 / (~labels).sum())

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = params[:-1], params[-1]
        z = x @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(w_sample * (np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * w @ w
        residual = w_sample * (p - y)
        grad = np.concatenate((x_t @ residual + l2 * w, [residual.sum()]))
        return float(nll), grad

    result = minimize(loss, np.zeros(n_features + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return InjectionClassifier(result.x[:-1] * scale, float(result.x[-1]), config)


def cross_validated_decisions(
    texts: list[str], labels: np.ndarray, config: HasherConfig, l2: float, n_extra: int,
    nb_alpha: float | None = 0.25, folds: int = CV_FOLDS,
) -> np.ndarray:
    """Out-of-fold decision values of ``texts`` (the training split only): k folds grouped by text hash, each
    scored by a model fitted (with its own synthetic long benign texts) on the others, its weights int8-quantised
    as shipped."""
    fold = np.array([(_text_hash(t) // 100) % folds for t in texts])
    decision = np.zeros(len(texts))
    for k in range(folds):
        inside = np.flatnonzero(fold != k)
        outside = np.flatnonzero(fold == k)
        fold_texts, fold_labels = augmented([texts[i] for i in inside], labels[inside], n_extra)
        model = InjectionClassifier.from_arrays(fit(fold_texts, fold_labels, config, l2, nb_alpha).to_arrays())
        decision[outside] = model.decision(featurize(with_decoded([texts[i] for i in outside])[0], config))
    return decision


def threshold_at(decision: np.ndarray, labels: np.ndarray, flagged_by_patterns: np.ndarray, target_fpr: float) -> float:
    """The decision value above which, with the patterns' own flags counted, at most ``target_fpr`` of the
    benign texts are flagged."""
    benign = np.sort(decision[~labels & ~flagged_by_patterns])
    budget = max(int(target_fpr * (~labels).sum()) - int((flagged_by_patterns & ~labels).sum()), 0)
    return float(benign[len(benign) - budget - 1]) if len(benign) > budget else 0.0


def cv_table(
    texts: Sequence[str], labels: np.ndarray, flagged: np.ndarray
) -> list[tuple[str, float, float, int, int]]:
    """(slice, recall, false-positive rate, attacks, benign) overall, under 400 characters and per length
    bucket; nan where a slice has no such text."""
    buckets = length_buckets(texts)
    slices = [("overall", np.ones(len(texts), dtype=bool)), ("<400", buckets <= 1)]
    slices += [(name, buckets == i) for i, name in enumerate(LENGTH_NAMES)]
    out = []
    for name, inside in slices:
        attack, benign = labels & inside, ~labels & inside
        out.append((name, float(flagged[attack].mean()) if attack.any() else float("nan"),
                    float(flagged[benign].mean()) if benign.any() else float("nan"),
                    int(attack.sum()), int(benign.sum())))
    return out


def print_cv_table(title: str, table: list[tuple[str, float, float, int, int]]) -> None:
    print(title)
    for name, recall, fpr, n_attack, n_benign in table:
        print(f"  {name:<9} recall {recall:.3f}  FPR {fpr:.4f}  (attacks {n_attack}, benign {n_benign})")


def print_report(title: str, table: dict[str, Scores]) -> None:
    print(title)
    for name, s in table.items():
        print(
            f"  {name:<15} precision {s.precision:.3f}  recall {s.recall:.3f}  F1 {s.f1:.3f}"
            f"  (attacks {s.n_attack}, benign {s.n_benign})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=INJECTION_MODEL)
    parser.add_argument("--bits", type=int, default=HasherConfig().bits)
    parser.add_argument("--l2", type=float, default=1e-4, help="chosen by 5-fold CV on the training split")
    parser.add_argument("--nb-alpha", type=float, default=0.25,
                        help="smoothing of the naive-Bayes feature scale (chosen by 5-fold CV); negative: none")
    parser.add_argument("--extra-benign", type=int, default=400, help="synthetic long benign texts to add")
    parser.add_argument("--target-fpr", type=float, default=0.005,
                        help="false-positive rate at p = 0.5, from cross-validation on the training split")
    args = parser.parse_args(argv)

    data = load_dataset(args.data)
    train = np.flatnonzero(~data.is_test)
    test = np.flatnonzero(data.is_test)
    config = HasherConfig(bits=args.bits)
    nb_alpha = args.nb_alpha if args.nb_alpha >= 0 else None
    train_texts, train_labels = [data.texts[i] for i in train], data.labels[train]
    # The operating point: the decision value that k-fold CV on the training split puts at the target
    # false-positive rate, counting the patterns' own flags; the shipped bias is shifted by it, so that
    # p >= 0.5 is that point.
    decision = cross_validated_decisions(train_texts, train_labels, config, args.l2, args.extra_benign, nb_alpha)
    flagged_by_patterns = InjectionDetector(None).score(train_texts).score >= 0.5
    shift = threshold_at(decision, train_labels, flagged_by_patterns, args.target_fpr)
    print_cv_table(f"patterns + classifier, {CV_FOLDS}-fold CV on the training split, at the shipped threshold:",
                   cv_table(train_texts, train_labels, flagged_by_patterns | (decision > shift)))
    texts, labels = augmented(train_texts, train_labels, args.extra_benign)
    fitted = fit(texts, labels, config, l2=args.l2, nb_alpha=nb_alpha)
    model = InjectionClassifier(fitted.weights, fitted.bias - shift, config)
    print(f"bias shifted by {-shift:+.3f}: p = 0.5 at a cross-validated false-positive rate of {args.target_fpr}")
    write_injection_model(model, args.out)
    reloaded = read_injection_model(args.out)  # report on the quantised weights actually shipped

    test_texts = [data.texts[i] for i in test]
    test_labels = data.labels[test]
    print(f"train {len(train)} rows (+{args.extra_benign} synthetic long benign), test {len(test)} rows; "
          f"model {args.out.stat().st_size / 1024:.0f} KiB")
    print_report("classifier alone (p >= 0.5), held-out split:",
                 report(lambda t: reloaded.predict_proba(t) >= 0.5, test_texts, test_labels))
    detector = InjectionDetector(reloaded)
    print_report("patterns + classifier (score >= 0.5), held-out split:",
                 report(lambda t: detector.score(t).score >= 0.5, test_texts, test_labels))
    print_cv_table("patterns + classifier (score >= 0.5), held-out split:",
                   cv_table(test_texts, test_labels, detector.score(test_texts).score >= 0.5))
    benign = [t for t, is_attack in zip(test_texts, test_labels, strict=True) if not is_attack]
    long_texts = long_benign(benign, np.repeat([600, 1000, 2000, 4000], 50), seed=1)
    false_positive = float(np.mean(detector.score(long_texts).score >= 0.5))
    print(f"synthetic long benign texts from the held-out split: false-positive rate {false_positive:.3f}")


if __name__ == "__main__":
    main()
