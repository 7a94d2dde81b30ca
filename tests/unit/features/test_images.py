"""Images at the input boundary: confinement to image_root, pixel bounds, decoder errors,
downscaled decoding and alpha."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from features.encoders import (
    ImageDecodeError,
    ImagePathError,
    ImageTooLargeError,
    decode_image,
    image_dimensions,
    resolve_image_path,
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "root" / "a" / "ok.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret" / "key.png")
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "secret" / "key.png")
    return tmp_path / "root"


@pytest.mark.parametrize(
    "path", ["../secret/key.png", "a/../../secret/key.png", "link.png", "/etc/passwd", "~/x"]
)
def test_paths_that_leave_image_root_are_refused_without_echoing_where_they_lead(root, path):
    with pytest.raises(ImagePathError) as caught:
        resolve_image_path(path, root)
    assert "secret" not in str(caught.value) and str(root) not in str(caught.value)


def test_paths_inside_image_root_resolve_and_missing_ones_name_only_the_given_path(root):
    assert resolve_image_path("a/ok.png", root).name == "ok.png"
    with pytest.raises(ImageDecodeError, match="'a/none.png'") as caught:
        resolve_image_path("a/none.png", root)
    assert str(root) not in str(caught.value)
    with pytest.raises(ImagePathError, match="image_root"):
        resolve_image_path("a/ok.png", None)


def test_a_tiny_file_declaring_huge_dimensions_is_refused_before_decoding():
    bomb = _bomb(20_000, 20_000)
    assert len(bomb) < 100
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb)
    with pytest.raises(ImageTooLargeError):
        image_dimensions(bomb)
    with pytest.raises(ImageTooLargeError, match="max_pixels=1000"):
        decode_image(_png(Image.new("RGB", (40, 40))), max_pixels=1000)


@pytest.mark.parametrize(
    "junk", [b"", b"not an image", _bomb(8, 8), b"\x89PNG\r\n\x1a\n" + b"\0" * 50]
)
def test_every_decoder_error_is_an_image_decode_error(junk):
    with pytest.raises(ImageDecodeError):
        decode_image(junk)


def test_decoding_downscales_large_images():
    big = Image.new("RGB", (1024, 768), "blue")
    assert decode_image(_png(big), size=32).size == (43, 32)  # reduce(24): short side 32
    jpeg = io.BytesIO()
    big.save(jpeg, format="JPEG")
    assert max(decode_image(jpeg.getvalue(), size=32).size) <= 256  # draft


def test_transparent_pixels_take_the_background_not_black():
    icon = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decode_image(_png(icon)).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(_png(icon), background=(0, 128, 0)).getpixel((0, 0)) == (0, 128, 0)
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    assert decode_image(_png(palette)).getpixel((0, 0)) == (255, 255, 255)
