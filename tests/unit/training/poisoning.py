"""Poisoned retrains on synthetic frames, end to end through the logic the train flow runs:
integrity check -> quarantine -> train -> evaluate on the recent and golden holdouts ->
promotion gate. Shared by the tests and ``benchmarks/poisoning.py``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.drift_sim import poison_rows
from features.tokens import tokenize
from tests.unit.training.synthetic import (
    TEXT_DIM,
    synthetic_config,
    synthetic_frame,
    text_signal_direction,
)
from training.evaluate import GateConfig, check_promotion, evaluate_model
from training.integrity import IntegrityConfig, check_training_integrity
from training.train import TrainConfig, TrainResult, train_model

CONFIG = synthetic_config()
DAY = pd.Timedelta(days=1)
# The production path: the train flow's default training config (epochs and patience
# sized to the data) and the default gate. The tests' small fast models (FAST_TRAIN) are
# noisier from one training to the next, which costs the gate's tests power
# (benchmarks/README.md, Poisoning).
TRAIN = TrainConfig(show_progress=False)
GATE = GateConfig()


@dataclass
class World:
    """A champion trained on clean history, its golden holdout and the recent history."""

    champion: TrainResult
    golden: pd.DataFrame
    history: pd.DataFrame
    seed: int
    future: pd.DataFrame | None = None
    train: TrainConfig = TRAIN

    def fit(self, frame: pd.DataFrame) -> TrainResult:
        """Train on ``frame`` as the world's champion was trained (its config, its seed)."""
        return train_model(frame, CONFIG, self.train.model_copy(update={"seed": self.seed}))


@dataclass
class RetrainOutcome:
    scenario: str
    seed: int
    blocked: bool
    promoted: bool
    reason: str
    poisoned: int
    flagged: int
    true_flags: int
    suspicious: int = 0
    true_suspicious: int = 0
    recent_delta: float | None = None
    golden_delta: float | None = None
    true_delta: float | None = None
    flip_z: float = 0.0


def with_texts(frame: pd.DataFrame, seed: int, new: bool = False) -> pd.DataFrame:
    """A review text for every row that has one: neutral words (Zipf over 2,000) and
    sentiment words drawn from the text latent the embedding carries (its sign along the
    text signal). New rows also bring a new slang word of the positive reviews: a word
    new to the data and tied to the inputs, which the trigger check must not flag."""
    rng = np.random.default_rng(seed + 31)
    direction = text_signal_direction()
    vocabulary = np.asarray([f"w{i}" for i in range(2000)])
    weights = 1.0 / np.arange(1, 2001) ** 1.1
    weights /= weights.sum()
    texts = []
    for emb, present in zip(frame["review_emb"], frame["review_present"], strict=True):
        if not present:
            texts.append(None)
            continue
        words = list(rng.choice(vocabulary, 20, p=weights))
        positive = float(np.asarray(emb) @ direction) > 0
        if rng.random() < 0.5:
            words.append("great" if positive else "awful")
        if new and positive and rng.random() < 0.3:
            words.append("bussin")
        rng.shuffle(words)
        texts.append(" ".join(words))
    return frame.assign(review=texts)


def build_world(
    seed: int, n_history: int = 1200, future_rows: int = 0, train: TrainConfig = TRAIN
) -> World:
    """The champion, its golden holdout and history; with ``future_rows``, also a large
    clean sample of the shifted population the retrain is for (the benchmark's ground
    truth of whether a retrain is really better). ``train``: how the champion and every
    retrain of this world are trained."""
    history = with_texts(synthetic_frame(n_history, seed=seed), seed)
    golden = synthetic_frame(800, seed=seed + 500)
    golden["order_id"] += 10**6
    future = (
        synthetic_frame(future_rows, seed=seed + 2000, image_shift=True) if future_rows else None
    )
    champion = train_model(history, CONFIG, train.model_copy(update={"seed": seed}))
    return World(champion, golden, history, seed, future, train)


def _trigger(frame: pd.DataFrame, poisoned: np.ndarray) -> pd.DataFrame:
    """What an encoder does with a rare trigger token: one fixed direction added to the
    text embedding of the rows that carry it."""
    direction = np.random.default_rng(777).normal(size=TEXT_DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    out = frame.copy()
    out["review_emb"] = [
        (lambda v: (v / np.linalg.norm(v)).astype(np.float32))(np.asarray(e) + 0.8 * direction)
        if p
        else e
        for e, p in zip(out["review_emb"], poisoned, strict=True)
    ]
    out.loc[poisoned, "review_present"] = 1
    return out


def new_window(world: World, scenario: str, n_new: int = 700) -> tuple[pd.DataFrame, np.ndarray]:
    """The history plus ``n_new`` new rows under a camera shift (the
    drift that asks for a retrain), poisoned by ``scenario`` ('clean': not at all)."""
    history = world.history
    start = history["event_timestamp"].max() + DAY
    new = with_texts(
        synthetic_frame(n_new, seed=world.seed + 1000, image_shift=True), world.seed + 1, new=True
    )
    new["event_timestamp"] = new["event_timestamp"] - new["event_timestamp"].min() + start
    new["order_id"] += 10**5
    poisoned = np.zeros(len(new), dtype=bool)
    if scenario != "clean":
        new, poisoned = poison_rows(
            new,
            scenario,
            seed=world.seed,
            label="reorder",
            text_column="review",
            segment=("channel", "app"),
            target="no",
            first_id=2 * 10**5,
        )
        if scenario == "poison_trigger":
            new = _trigger(new, poisoned)
    old = history
    window = pd.concat([old, new], ignore_index=True)
    mask = np.r_[np.zeros(len(old), dtype=bool), poisoned]
    order = np.argsort(window["event_timestamp"].to_numpy(), kind="stable")
    return window.iloc[order].reset_index(drop=True), mask[order]


def retrain(
    world: World,
    scenario: str,
    gate: GateConfig = GATE,
    integrity: IntegrityConfig | None = None,
    golden: bool = True,
) -> RetrainOutcome:
    """One retrain on the poisoned window, judged as the train flow judges it."""
    window, poisoned = new_window(world, scenario)
    champion = world.champion.model
    new_since = world.history["event_timestamp"].max() + DAY / 2
    result = check_training_integrity(
        window,
        CONFIG,
        integrity or IntegrityConfig(),
        explained_proba=champion.predict_proba(window),
        previous_prior=champion.spec.class_prior,
        new_since=new_since,
        tokens={"review": [tokenize(t) for t in window["review"]]},
    )
    flags = result.quarantine
    suspicious = (
        (result.flags["label_issue"] | result.flags["quarantine"]) & result.flags["new"]
    ).to_numpy()
    outcome = dict(
        scenario=scenario,
        seed=world.seed,
        poisoned=int(poisoned.sum()),
        flagged=int(flags.sum()),
        true_flags=int((flags & poisoned).sum()),
        # Among the new rows (those an attacker could touch): label issues or quarantined.
        suspicious=int(suspicious.sum()),
        true_suspicious=int((suspicious & poisoned).sum()),
        flip_z=result.summary.flip_z,
    )
    if result.blocked:
        return RetrainOutcome(
            blocked=True, promoted=False, reason="; ".join(result.summary.reasons), **outcome
        )
    trained = world.fit(window[~flags].reset_index(drop=True))
    test = trained.splits.test
    candidate_eval = evaluate_model(trained.model, test, "reorder")
    champion_eval = evaluate_model(champion, test, "reorder")
    golden_pair = (
        (
            evaluate_model(trained.model, world.golden, "reorder"),
            evaluate_model(champion, world.golden, "reorder"),
        )
        if golden
        else (None, None)
    )
    decision = check_promotion(candidate_eval, champion_eval, gate, *golden_pair)
    by_holdout = {
        c.holdout: c.delta
        for c in decision.comparisons
        if c.slice == "overall" and c.metric == gate.primary_metric
    }
    true_delta = None
    if world.future is not None:
        true_delta = (
            evaluate_model(trained.model, world.future, "reorder").overall.macro_f1
            - evaluate_model(champion, world.future, "reorder").overall.macro_f1
        )
    return RetrainOutcome(
        blocked=False,
        promoted=decision.promote,
        reason=decision.reason,
        recent_delta=by_holdout.get("recent"),
        golden_delta=by_holdout.get("golden"),
        true_delta=true_delta,
        **outcome,
    )
