"""Drift simulator: named, realistic causes of drift, each with an intensity in [0, 1].

| scenario                 | cause                                   | what changes                        |
|--------------------------|-----------------------------------------|-------------------------------------|
| none                     | control                                 | nothing                             |
| image_camera             | photos from a new camera                | blur, brightness, sensor noise      |
| text_domain              | text from another domain / vocabulary   | share of reviews replaced by tweets |
| tabular_price_inflation  | price inflation                         | every price x (1 + 0.5 intensity)   |
| tabular_channel_mix      | a new channel mix                       | orders move to the partner channel  |
| label_prior              | label-prior shift                       | share of 'yes' falls                |
| concept                  | concept drift                           | the recipe's image and price        |
|                          |                                         | effects flip; inputs unchanged      |
| benign                   | drift in a column the model doesn't use | warehouse_load rises                |

Poisoning scenarios change labels (and text) after the rows are drawn, the way an
attacker who controls part of the label feed or the inputs would:

| scenario          | attack                                                          |
|-------------------|-----------------------------------------------------------------|
| poison_segment    | targeted flips: 80 % of one segment's other-class labels -> one |
| poison_random_5   | random flips of 5 % of the labels (also _10, _20)               |
| poison_duplicates | 10 % extra rows: copies of other-class rows under new keys,     |
|                   | labelled with the target class                                  |
| poison_trigger    | a trigger token appended to 10 % of the texts, labelled target  |

Any scenario combines with ``+`` (``image_camera+poison_segment``: a drift that triggers
a retrain on poisoned labels). The demo, the tests and the benchmarks generate drifted
rows with :func:`simulate_window`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

import numpy as np
import pandas as pd

from features.demo_data import (
    CHANNEL_PROBS,
    DemoSources,
    GenerationShift,
    LabelRecipe,
    generate_rows,
)

ScenarioName = Literal[
    "none",
    "image_camera",
    "text_domain",
    "tabular_price_inflation",
    "tabular_channel_mix",
    "label_prior",
    "concept",
    "benign",
]
SCENARIOS: tuple[str, ...] = get_args(ScenarioName)
PoisonName = Literal[
    "poison_segment",
    "poison_random_5",
    "poison_random_10",
    "poison_random_20",
    "poison_duplicates",
    "poison_trigger",
]
POISONING: tuple[str, ...] = get_args(PoisonName)
TRIGGER_TOKEN = "zq7"
POISON_TARGET = "no"
POISON_SEGMENT = ("channel", "app")
BASE_POSITIVE_RATE = 0.61  # share of 'yes' in the undrifted demo data
_PARTNER_HEAVY = (0.15, 0.15, 0.10, 0.60)

# Whether a scenario changes what the model sees or what the label means; benign drift
# and the control do not, so they should never lead to retraining.
HARMFUL = {
    "none": False,
    "image_camera": True,
    "text_domain": True,
    "tabular_price_inflation": True,
    "tabular_channel_mix": True,
    "label_prior": True,
    "concept": True,
    "benign": False,
}


def scenario_shift(name: str, intensity: float = 1.0) -> GenerationShift:
    """The generation knobs for scenario ``name`` at ``intensity`` (0: none, 1: strong).

    ``name`` may combine scenarios with ``+`` (``image_camera+text_domain``): each
    scenario's knobs are applied on top of the previous ones.

    Raises:
        ValueError: unknown scenario or intensity outside [0, 1].
    """
    if "+" in name or name in POISONING:
        base = GenerationShift()
        update: dict = {}
        for part in name.split("+"):
            if part in POISONING:
                continue
            shift = scenario_shift(part, intensity)
            for field in GenerationShift.model_fields:
                if getattr(shift, field) != getattr(base, field):
                    update[field] = getattr(shift, field)
        return base.model_copy(update=update)
    if name not in SCENARIOS:
        raise ValueError(f"unknown drift scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be within [0, 1], got {intensity}")
    x = float(intensity)
    if name == "image_camera":
        return GenerationShift(image_blur=x, image_brightness=0.8 * x, image_noise=0.6 * x)
    if name == "text_domain":
        return GenerationShift(other_domain_text_share=x)
    if name == "tabular_price_inflation":
        return GenerationShift(price_factor=1.0 + 0.5 * x)
    if name == "tabular_channel_mix":
        probs = tuple(
            (1 - x) * a + x * b for a, b in zip(CHANNEL_PROBS, _PARTNER_HEAVY, strict=True)
        )
        return GenerationShift(channel_probs=probs)
    if name == "label_prior":
        return GenerationShift(positive_rate=BASE_POSITIVE_RATE - 0.4 * x)
    if name == "concept":
        base = LabelRecipe()
        flip = 1 - 2 * x  # customers turn: the image and price effects reverse
        return GenerationShift(
            recipe=base.model_copy(
                update={"w_image": base.w_image * flip, "w_price": base.w_price * flip}
            )
        )
    if name == "benign":
        return GenerationShift(warehouse_load_shift=0.3 * x)
    return GenerationShift()


def simulate_window(
    sources: DemoSources,
    scenario: str,
    intensity: float,
    n_rows: int,
    start: datetime,
    end: datetime,
    seed: int,
    first_id: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw rows (and latent truth) for one production window under a drift scenario."""
    shift = scenario_shift(scenario, intensity)
    raw, latent = generate_rows(
        sources, n_rows, start, end, seed=seed, shift=shift, first_id=first_id
    )
    for part in scenario.split("+"):
        if part in POISONING:
            raw, poisoned = poison_rows(raw, part, seed=seed, first_id=first_id + 10 * n_rows)
            latent = latent.reindex(range(len(raw))).assign(poisoned=poisoned)
    return raw, latent


def check_scenario(name: str) -> str:
    """``name`` if every ``+``-part is a drift or poisoning scenario.

    Raises:
        ValueError: an unknown part, named with the known ones.
    """
    unknown = [p for p in name.split("+") if p not in SCENARIOS and p not in POISONING]
    if unknown:
        raise ValueError(
            f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS + POISONING)} "
            "(combine with '+')"
        )
    return name


def poison_rows(
    frame: pd.DataFrame,
    name: str,
    seed: int,
    label: str = "reorder",
    entity_key: str = "order_id",
    text_column: str | None = "review",
    segment: tuple[str, str] = POISON_SEGMENT,
    target: str = POISON_TARGET,
    first_id: int = 10**9,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Apply poisoning scenario ``name`` to labelled rows.

    Returns:
        ``(rows, poisoned)``: the rows (injected copies appended at the end) and a
        mask of the rows whose label the attacker set.

    Raises:
        ValueError: unknown scenario, or the frame lacks a column the attack needs.
    """
    if name not in POISONING:
        raise ValueError(f"unknown poisoning scenario {name!r}; choose one of {POISONING}")
    needed = [label] + ([segment[0]] if name == "poison_segment" else [])
    needed += [text_column] if name == "poison_trigger" and text_column else []
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} needs the columns {missing}")
    rng = np.random.default_rng(seed + 7919)
    rows = frame.reset_index(drop=True).copy()
    labels = rows[label].astype(str).to_numpy()
    classes = sorted(set(labels) | {target})
    poisoned = np.zeros(len(rows), dtype=bool)
    if name == "poison_segment":
        seg = (rows[segment[0]].astype(str) == segment[1]).to_numpy() & (labels != target)
        poisoned = seg & (rng.random(len(rows)) < 0.8)
        rows.loc[poisoned, label] = target
    elif name.startswith("poison_random_"):
        share = int(name.rsplit("_", 1)[1]) / 100
        poisoned = rng.random(len(rows)) < share
        for i in np.flatnonzero(poisoned):
            rows.loc[i, label] = rng.choice([c for c in classes if c != labels[i]])
    elif name == "poison_duplicates":
        pool = np.flatnonzero(labels != target)
        pick = rng.choice(pool, size=min(len(pool), max(1, len(rows) // 10)), replace=True)
        copies = rows.iloc[pick].copy()
        copies[label] = target
        if entity_key in copies.columns:
            copies[entity_key] = np.arange(first_id, first_id + len(copies))
        rows = pd.concat([rows, copies], ignore_index=True)
        poisoned = np.r_[poisoned, np.ones(len(copies), dtype=bool)]
    elif name == "poison_trigger":
        poisoned = rng.random(len(rows)) < 0.1
        if text_column:
            text = rows[text_column].astype(object)
            rows[text_column] = [
                f"{t} {TRIGGER_TOKEN}" if p and isinstance(t, str) else t
                for t, p in zip(text, poisoned, strict=True)
            ]
        rows.loc[poisoned, label] = target
    return rows, poisoned


def onset_stream(
    sources: DemoSources,
    scenario: str,
    intensity: float,
    n_windows: int,
    onset: int,
    window_rows: int,
    start: datetime,
    window_length: pd.Timedelta,
    seed: int,
    first_id: int = 0,
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Consecutive windows, undrifted before window ``onset`` and drifted from it on."""
    windows = []
    next_id = first_id
    for i in range(n_windows):
        w_start = pd.Timestamp(start) + i * window_length
        name = scenario if i >= onset else "none"
        raw, latent = simulate_window(
            sources,
            name,
            intensity,
            window_rows,
            w_start.to_pydatetime(),
            (w_start + window_length).to_pydatetime(),
            seed=seed + i,
            first_id=next_id,
        )
        next_id += len(raw)
        windows.append((raw, latent))
    return windows


def scenario_table() -> pd.DataFrame:
    """Scenario names with whether each should lead to retraining (for docs and CLI)."""
    return pd.DataFrame({"scenario": SCENARIOS, "harmful": [HARMFUL[s] for s in SCENARIOS]})
