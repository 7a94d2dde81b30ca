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

The demo, the tests and the benchmarks generate drifted rows with :func:`simulate_window`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

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
    if "+" in name:
        base = GenerationShift()
        update: dict = {}
        for part in name.split("+"):
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
    return generate_rows(sources, n_rows, start, end, seed=seed, shift=shift, first_id=first_id)


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
