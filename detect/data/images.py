"""Robust image reading: every file becomes a (H, W, 3) uint8 RGB array or a DetectError.

Conventions, applied the same way by `read_image` and `decode_image_bytes`:

- EXIF orientation (tags 2-8) is applied, so arrays are in the displayed orientation and
  `image_size` reports the displayed (width, height): the image labelling tools show and
  OpenCV's `imread` returns. The tag is read from JPEG/WebP EXIF, TIFF's own IFD (which
  Pillow rotates on load by itself) and a PNG eXIf chunk before or after the pixel data.
- Grayscale ("L") and 1-bit ("1") images are repeated to 3 channels; 1-bit black/white
  become 0/255.
- Alpha ("RGBA", "LA", "PA", palette images with a transparency entry) is removed by
  compositing onto white: `out = round(a * c + (1 - a) * 255)` with `a = alpha / 255`.
  White matches how viewers show transparent logos and documents.
- 16-bit grayscale ("I;16*", "I") is mapped to 8 bits by `v >> 8` (values outside
  0..65535 are clipped first), as Pillow maps 16-bit RGB and OpenCV maps every 16-bit
  image; it is the exact inverse of the 8-to-16-bit widening `v * 257`.
- CMYK, YCbCr and other colour modes are converted by PIL.
- Truncated or corrupt files are refused: PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` is
  never turned on.
- Images with more than `MAX_PIXELS` pixels are refused from the header, before any pixel
  buffer is allocated (decompression-bomb guard).

Memory: Pillow's decoded image is converted, composited and rotated in strips of rows
into one preallocated output array, so a large photo (8000x6000) costs Pillow's buffer
plus the output, never a float copy or a second full-size array.
"""

import io
import os
import struct
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from detect.errors import DetectError

MAX_PIXELS = 100_000_000

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# Decoded bytes per strip of rows (see the module docstring, "Memory").
_STRIP_BYTES = 16 << 20
# Orientation tag -> array op producing the displayed image (see the EXIF 2.3 spec, 0x0112).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


def display_name(path):
    """Printable form of a path (str, bytes or PathLike), also for non-UTF-8 names."""
    text = os.fsdecode(path) if not isinstance(path, str) else path
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def image_size(path):
    """(width, height) of the image at `path` in displayed orientation, from the header only.

    EXIF orientations 5-8 (a 90-degree rotation) swap width and height, as `read_image`
    does. Pixels are not decoded (a PNG's chunks are skipped over to find an eXIf chunk
    after the pixel data), so a truncated file still reports its size.

    Raises:
        DetectError: the file is missing, is not a readable image, or has more than
            `MAX_PIXELS` pixels.
    """
    name = display_name(path)
    with _open_file(path, name) as handle:
        image = _open_image(handle, name)
        with image:
            width, height = image.size
            if _orientation(image, header_only=True) in (5, 6, 7, 8) and not _size_is_displayed(image):
                width, height = height, width
    return width, height


def _size_is_displayed(image):
    """True when Pillow already reports the displayed size: its TIFF reader swaps width and
    height of orientations 5-8 at open (and rotates the pixels on load)."""
    if image.format != "TIFF":
        return False
    tags = image.tag_v2
    return (tags.get(256), tags.get(257)) != image.size  # ImageWidth, ImageLength


def read_image(path):
    """Decode the image file at `path` to a (H, W, 3) uint8 RGB array (see module docstring).

    Raises:
        DetectError: naming the file when it is missing, not an image, truncated, corrupt,
            in an unsupported mode, or larger than `MAX_PIXELS` pixels.
    """
    name = display_name(path)
    with _open_file(path, name) as handle:
        return _decode(handle, name)


def decode_image_bytes(data, name="<bytes>"):
    """Decode encoded image bytes (JPEG, PNG, ...) to a (H, W, 3) uint8 RGB array.

    Same conventions and errors as `read_image`; `name` is used in error messages. Accepts
    bytes-like objects and 0-d object arrays holding bytes (what `tf.numpy_function` passes
    for a scalar `tf.string`).
    """
    if isinstance(data, np.ndarray):
        data = data.item()
    return _decode(io.BytesIO(bytes(data)), display_name(name))


def _open_file(path, name):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DetectError(f"image file not found: {name}") from None
    except IsADirectoryError:
        raise DetectError(f"expected an image file, got a directory: {name}") from None
    except OSError as error:
        raise DetectError(f"cannot open image {name}: {error.strerror or error}") from None


def _open_image(handle, name):
    """Open lazily (header only) and apply the pixel-count guard before any decoding."""
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is the limit here; PIL's own lower default would only warn.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
    except Image.DecompressionBombError:
        raise DetectError(f"image too large (over {MAX_PIXELS} pixels): {name}") from None
    except UnidentifiedImageError:
        raise DetectError(f"not an image or unsupported image format: {name}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DetectError(f"corrupt image header in {name}: {error}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise DetectError(
            f"image too large: {width}x{height} = {width * height} pixels exceeds "
            f"{MAX_PIXELS}: {name}"
        )
    return image


def _orientation(image, header_only=False):
    """EXIF orientation tag (1..8); 1 when absent or unreadable.

    header_only: do not decode pixels (a PNG's trailing eXIf chunk is found by skipping
    over its chunks). After `load()`, a TIFF's tag is gone: Pillow has applied it.
    """
    try:
        if header_only and image.format == "PNG" and "exif" not in image.info:
            # PngImageFile.getexif would decode every pixel to look for a trailing chunk.
            exif = Image.Image.getexif(image)
            if ExifTags.Base.Orientation not in exif:
                exif = _trailing_png_exif(image.fp)
        else:
            exif = image.getexif()
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        return 1
    return value if value in range(1, 9) else 1


def _trailing_png_exif(handle):
    """The Exif of a PNG's eXIf chunk found by seeking from chunk header to chunk header
    (nothing is decompressed); empty when there is none. Restores the file position."""
    exif = Image.Exif()
    position = handle.tell()
    try:
        handle.seek(8)  # the PNG signature
        while True:
            header = handle.read(8)
            if len(header) < 8:
                break
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                exif.load(handle.read(length))
                break
            if kind == b"IEND":
                break
            handle.seek(length + 4, os.SEEK_CUR)  # data and CRC
    finally:
        handle.seek(position)
    return exif


def _decode(handle, name):
    image = _open_image(handle, name)
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
            # After load: a PNG's trailing eXIf chunk is known, a TIFF is already rotated.
            return _displayed_rgb(image, _orientation(image), name)
        except DetectError:
            raise
        except MemoryError:
            raise DetectError(f"out of memory while decoding {name}") from None
        except Exception as error:  # noqa: BLE001 - PIL decoders raise many error types
            raise DetectError(f"corrupt or truncated image {name}: {error}") from None


def _displayed_rgb(image, orientation, name):
    """A loaded PIL image -> (H, W, 3) uint8 RGB C-contiguous array in displayed orientation.

    Strips of stored rows are converted (`_to_rgb_array`), turned (`_ORIENT`) and written
    into their place in one output array: stored rows [y0, y1) become displayed rows
    (orientations 1-4) or columns (5-8), counted from the far side where the turn reverses
    them (3, 4, 6, 7).
    """
    width, height = image.size
    transposed = orientation in (5, 6, 7, 8)
    if height * width * 4 <= _STRIP_BYTES:
        pixels = _to_rgb_array(image, name)
        if orientation in _ORIENT:
            pixels = _ORIENT[orientation](pixels)
        return np.ascontiguousarray(pixels)
    out = np.empty((width, height, 3) if transposed else (height, width, 3), np.uint8)
    reversed_ = orientation in (3, 4, 6, 7)
    rows = max(1, _STRIP_BYTES // (width * 4))
    transparency = image.info.get("transparency")
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        strip = image.crop((0, y0, width, y1))
        if transparency is not None:
            strip.info["transparency"] = transparency
        piece = _to_rgb_array(strip, name)
        if orientation in _ORIENT:
            piece = _ORIENT[orientation](piece)
        start, stop = (height - y1, height - y0) if reversed_ else (y0, y1)
        if transposed:
            out[:, start:stop] = piece
        else:
            out[start:stop] = piece
    return out


def _composite_on_white(values):
    """(H, W, C + 1) uint8 colour + alpha -> (H, W, C) uint8 `round(a * c + (1 - a) * 255)`,
    a = alpha / 255, in integers: c * alpha + 255 * (255 - alpha) <= 65025 fits uint16, and
    n / 255 is never exactly half-way, so `(n + 127) // 255` is the rounding."""
    values = values.astype(np.uint16)
    alpha = values[..., -1:]
    return ((values[..., :-1] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _to_rgb_array(image, name):
    """A loaded PIL image in any mode -> (H, W, 3) uint8 RGB array in stored orientation."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA"):
        blended = _composite_on_white(np.asarray(image))
        return np.repeat(blended, 3, axis=2) if mode == "LA" else blended
    if mode in _ALPHA_MODES:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        gray = (values >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DetectError(f"unsupported image mode F (32-bit float): {name}")
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:
            raise DetectError(f"unsupported image mode {mode}: {name}") from None
    return np.asarray(image, dtype=np.uint8)
