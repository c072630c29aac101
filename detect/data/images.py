"""Robust image reading: every file becomes a (H, W, 3) uint8 RGB array or a DetectError.

Conventions, applied the same way by `read_image` and `decode_image_bytes`:

- EXIF orientation (tags 2-8) is applied, so arrays are in the displayed orientation and
  `image_size` reports the displayed (width, height).
- Grayscale ("L") and 1-bit ("1") images are repeated to 3 channels; 1-bit black/white
  become 0/255.
- Alpha ("RGBA", "LA", "PA", palette images with a transparency entry) is removed by
  compositing onto white: `out = round(a * c + (1 - a) * 255)` with `a = alpha / 255`.
  White matches how viewers show transparent logos and documents.
- 16-bit grayscale ("I;16*", "I") is mapped to 8 bits by `round(v / 257)` (values outside
  0..65535 are clipped first), the exact inverse of the 8-to-16-bit widening `v * 257`.
- CMYK, YCbCr and other colour modes are converted by PIL.
- Truncated or corrupt files are refused: PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` is
  never turned on.
- Images with more than `MAX_PIXELS` pixels are refused from the header, before any pixel
  buffer is allocated (decompression-bomb guard).
"""

import io
import os
import warnings

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from detect.errors import DetectError

MAX_PIXELS = 100_000_000

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
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

    EXIF orientations 5-8 (a 90-degree rotation) swap width and height. Pixels are not
    decoded, so a truncated file still reports its size. A PNG whose EXIF chunk comes after
    the pixel data is reported in stored orientation.

    Raises:
        DetectError: the file is missing, is not a readable image, or has more than
            `MAX_PIXELS` pixels.
    """
    name = display_name(path)
    with _open_file(path, name) as handle:
        image = _open_image(handle, name)
        with image:
            width, height = image.size
            if _orientation(image, header_only=True) in (5, 6, 7, 8):
                width, height = height, width
    return width, height


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
    """EXIF orientation tag (1..8); 1 when absent or unreadable."""
    try:
        if header_only and image.format == "PNG" and "exif" not in image.info:
            # PngImageFile.getexif would decode every pixel to look for a trailing chunk.
            exif = Image.Image.getexif(image)
        else:
            exif = image.getexif()
        value = int(exif.get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        return 1
    return value if value in range(1, 9) else 1


def _decode(handle, name):
    image = _open_image(handle, name)
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
            orientation = _orientation(image)
            pixels = _to_rgb_array(image, name)
        except DetectError:
            raise
        except Exception as error:  # noqa: BLE001 - PIL decoders raise many error types
            raise DetectError(f"corrupt or truncated image {name}: {error}") from None
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    return np.ascontiguousarray(pixels)


def _to_rgb_array(image, name):
    """A loaded PIL image in any mode -> (H, W, 3) uint8 RGB array in stored orientation."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        blended = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.round(blended).astype(np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image).astype(np.float64), 0, 65535)
        gray = np.round(values / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise DetectError(f"unsupported image mode F (32-bit float): {name}")
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:
            raise DetectError(f"unsupported image mode {mode}: {name}") from None
    return np.asarray(image, dtype=np.uint8)
