"""Peak memory while ingesting 1,000 large images (issue 11: ten 5000x5000 PNGs once
added 1.09 GB at embedding).

    .venv/bin/python -m benchmarks.image_ingest_memory [--n 1000] [--png-share 0.1]

Writes distinct large images (4000x3000 JPEG photos-like, and a share of 5000x5000 PNGs)
to a temporary folder, then runs ``ingest_window`` (gate with per-row pixel bound and
decoding, embedding, offline store) and reports the peak resident memory above the
process's peak before ingesting (encoders loaded, one warm-up batch done).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _images(folder: Path, n: int, png_share: float) -> list[str]:
    """Distinct files: one JPEG and one PNG template, each copy made unique by trailing
    bytes that decoders ignore (so every file is hashed, checked and decoded)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((4000, 3000), Image.BICUBIC)
    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=85)
    big = Image.fromarray(small).resize((5000, 5000), Image.NEAREST)
    png = io.BytesIO()
    big.save(png, format="PNG")
    names = []
    n_png = int(round(n * png_share))
    for i in range(n):
        kind, data = ("png", png) if i < n_png else ("jpg", jpeg)
        name = f"{i:05d}.{kind}"
        (folder / name).write_bytes(data.getvalue() + i.to_bytes(4, "big"))
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--png-share", type=float, default=0.1)
    args = parser.parse_args()

    from features.embedding import Encoders
    from features.ingest import IngestPaths, ingest_window
    from features.schema import DatasetConfig
    from features.store import prepare_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        started = time.perf_counter()
        names = _images(root / "images", args.n, args.png_share)
        write_s = time.perf_counter() - started
        config = DatasetConfig.model_validate(
            {
                "name": "bench",
                "entity_key": "id",
                "timestamp": "ts",
                "label": "y",
                "classes": ["a", "b"],
                "images": [{"name": "photo"}],
                "image_root": str(root / "images"),
            }
        )
        stamps = pd.Timestamp("2026-03-01T00:00Z") + pd.to_timedelta(np.arange(args.n), unit="s")
        raw = pd.DataFrame(
            {"id": np.arange(args.n), "ts": stamps, "y": ["a", "b"] * (args.n // 2), "photo": names}
        )
        paths = IngestPaths(
            feast_dir=root / "feast",
            labels_dir=root / "labels",
            quarantine_dir=root / "quarantine",
            embedding_cache_dir=root / "cache",
        )
        store = prepare_store(config, paths.feast_dir)
        encoders = Encoders.load(config)
        start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
        ingest_window(raw.head(8), config, store, encoders, paths, start, end)  # warm-up
        baseline = _peak_mb()
        started = time.perf_counter()
        result = ingest_window(raw, config, store, encoders, paths, start, end)
        seconds = time.perf_counter() - started
        peak = _peak_mb()
    out = {
        "images": args.n,
        "png_5000x5000": int(round(args.n * args.png_share)),
        "jpeg_4000x3000": args.n - int(round(args.n * args.png_share)),
        "stored": result.stored,
        "quarantined": result.quarantined,
        "write_images_s": round(write_s, 1),
        "ingest_s": round(seconds, 1),
        "images_per_s": round(args.n / seconds, 1),
        "peak_rss_before_mb": round(baseline),
        "peak_rss_after_mb": round(peak),
        "peak_above_baseline_mb": round(peak - baseline),
        "goal": "under 1 GB above the baseline process",
    }
    print(json.dumps(out, indent=2))
    folder = Path("benchmarks/out")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "image_ingest_memory.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
