import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from detect.data import images
from detect.data.images import decode_image_bytes, image_size, read_image
from detect.errors import DetectError


def _png_with_header(width, height):
    """A PNG whose IHDR claims width x height but whose pixel data is a few bytes."""

    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trip_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _save(tmp_path, "rgb.png", Image.fromarray(pixels))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, pixels)
    assert image_size(path) == (7, 5)


def test_one_by_one_image(tmp_path):
    path = _save(tmp_path, "one.png", Image.new("RGB", (1, 1), (9, 8, 7)))
    np.testing.assert_array_equal(read_image(path), [[[9, 8, 7]]])
    assert image_size(path) == (1, 1)


def test_grayscale_repeated_to_three_channels(tmp_path):
    gray = np.array([[0, 100, 255]], dtype=np.uint8)
    out = read_image(_save(tmp_path, "gray.png", Image.fromarray(gray, mode="L")))
    assert out.shape == (1, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


def test_one_bit_image_becomes_black_and_white(tmp_path):
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    out = read_image(_save(tmp_path, "bits.png", image))
    np.testing.assert_array_equal(out, [[[0, 0, 0], [255, 255, 255]]])


def test_rgba_composited_on_white(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [200, 0, 0, 128]]], dtype=np.uint8)
    out = read_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba, mode="RGBA")))
    # alpha 128: 200 * 128/255 + 255 * 127/255 = 100.39 + 127 = 227.39 -> 227;
    #            0 * 128/255 + 127 = 127
    np.testing.assert_array_equal(out, [[[255, 255, 255], [10, 20, 30], [227, 127, 127]]])


def test_gray_alpha_composited_on_white(tmp_path):
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (50, 0))
    la.putpixel((1, 0), (50, 255))
    out = read_image(_save(tmp_path, "la.png", la))
    np.testing.assert_array_equal(out, [[[255, 255, 255], [50, 50, 50]]])


def test_palette_transparency_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = _save(tmp_path, "palette.png", image, transparency=0)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_image(path), [[[255, 255, 255], [255, 0, 0]]])


def test_sixteen_bit_png_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 128, 257, 32768, 65535]], dtype=np.uint16)
    path = _save(tmp_path, "deep.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    # round(v / 257): 128/257=0.498 -> 0, 257 -> 1, 32768/257=127.502 -> 128, 65535 -> 255
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 1, 128, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    image = Image.new("CMYK", (16, 8), (0, 0, 0, 0))
    image.paste((255, 0, 0, 0), (8, 0, 16, 8))  # full cyan on the right half
    path = _save(tmp_path, "cmyk.jpg", image, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = read_image(path)
    assert out.shape == (8, 16, 3)
    np.testing.assert_allclose(out[4, 2], [255, 255, 255], atol=4)
    np.testing.assert_allclose(out[4, 13], [0, 255, 255], atol=4)


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    # Stored 60 wide x 40 high, grey with a red 8x8 block at the stored top-left.
    stored = np.full((40, 60, 3), 128, dtype=np.uint8)
    stored[:8, :8] = (255, 0, 0)
    path = _save(tmp_path, "rotated.jpg", Image.fromarray(stored), exif=_exif(6), quality=95)
    # Orientation 6: turn 90 degrees clockwise to display, so the image becomes 40 wide x
    # 60 high and the stored top-left block lands at the top-right: rows 0..7, cols 32..39.
    assert image_size(path) == (40, 60)
    out = read_image(path)
    assert out.shape == (60, 40, 3)
    np.testing.assert_allclose(out[3, 36], [255, 0, 0], atol=12)
    np.testing.assert_allclose(out[3, 3], [128, 128, 128], atol=12)
    np.testing.assert_allclose(out[56, 36], [128, 128, 128], atol=12)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil_transpose(tmp_path, orientation):
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    path = _save(tmp_path, "o.png", Image.fromarray(pixels), exif=_exif(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    out = read_image(path)
    np.testing.assert_array_equal(out, expected)
    assert out.flags["C_CONTIGUOUS"]
    assert image_size(path) == (expected.shape[1], expected.shape[0])


def _jpeg_bytes(height=64, width=96):
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("keep", [0.5, -2])
def test_truncated_jpeg_refused_naming_file(tmp_path, keep):
    data = _jpeg_bytes()
    cut = int(len(data) * keep) if keep > 0 else len(data) + keep  # -2: only the EOI marker lost
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:cut])
    with pytest.raises(DetectError, match="cut.jpg"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert image_size(path) == (96, 64)  # the header alone is intact


def test_non_image_file_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(DetectError, match=r"not an image.*notes\.jpg"):
        read_image(path)
    with pytest.raises(DetectError, match=r"notes\.jpg"):
        image_size(path)


def test_missing_file_and_directory_refused(tmp_path):
    with pytest.raises(DetectError, match=r"not found.*absent\.png"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(DetectError, match=r"not found.*absent\.png"):
        image_size(tmp_path / "absent.png")
    with pytest.raises(DetectError, match="directory"):
        read_image(tmp_path)


def test_names_with_spaces_and_non_utf8_bytes(tmp_path):
    pixels = np.full((3, 2, 3), 77, dtype=np.uint8)
    spaced = _save(tmp_path, "my photo 1.png", Image.fromarray(pixels))
    np.testing.assert_array_equal(read_image(str(spaced)), pixels)

    raw_name = os.path.join(os.fsencode(tmp_path), b"caf\xe9 \xff.png")
    with open(raw_name, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG")
    np.testing.assert_array_equal(read_image(raw_name), pixels)
    assert image_size(raw_name) == (2, 3)

    missing = os.path.join(os.fsencode(tmp_path), b"gone \xff.png")
    with pytest.raises(DetectError) as caught:
        read_image(missing)
    message = str(caught.value)
    message.encode("utf-8")  # printable: no lone surrogates reach the terminal
    assert "gone " in message and "\n" not in message


@pytest.mark.parametrize("width, height", [(20000, 20000), (12000, 9000)])
def test_bomb_header_refused_without_decoding(tmp_path, monkeypatch, width, height):
    # 20000*20000 = 4e8 trips PIL's own hard limit; 12000*9000 = 1.08e8 only ours (1e8).
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header(width, height))

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for reader in (image_size, read_image):
        with pytest.raises(DetectError, match=r"too large.*bomb\.png"):
            reader(path)
    with pytest.raises(DetectError, match=r"too large.*upload"):
        decode_image_bytes(path.read_bytes(), name="upload")


def test_header_at_the_limit_is_measured_without_warning(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(_png_with_header(10000, 10000))  # exactly MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (10000, 10000)


def test_pixel_limit_is_read_at_call_time(tmp_path, monkeypatch):
    path = _save(tmp_path, "small.png", Image.new("RGB", (4, 4)))
    monkeypatch.setattr(images, "MAX_PIXELS", 15)  # 4*4 = 16 > 15
    with pytest.raises(DetectError, match="too large"):
        read_image(path)


def test_decode_image_bytes_matches_read_image(tmp_path):
    data = _jpeg_bytes()
    path = tmp_path / "same.jpg"
    path.write_bytes(data)
    expected = read_image(path)
    np.testing.assert_array_equal(decode_image_bytes(data), expected)
    np.testing.assert_array_equal(decode_image_bytes(np.array(data, dtype=object)), expected)
    np.testing.assert_array_equal(decode_image_bytes(bytearray(data)), expected)


def test_decode_image_bytes_errors_use_name():
    with pytest.raises(DetectError, match="frame_7"):
        decode_image_bytes(b"garbage", name="frame_7")
    with pytest.raises(DetectError, match="<bytes>"):
        decode_image_bytes(_jpeg_bytes()[:300])


def test_float_image_refused_with_mode(tmp_path):
    path = _save(tmp_path, "float.tiff", Image.fromarray(np.zeros((2, 2), np.float32)))
    with pytest.raises(DetectError, match=r"mode F.*float\.tiff"):
        read_image(path)
