"""Image files as phones, cameras and editors write them, made with PIL at test time.

Every kind holds the same displayed picture (`displayed()`): a dark (30) 72x48 (WxH)
image with a bright (230) rectangle at `BOX` (xyxy, displayed pixels). Files with an EXIF
orientation store the pixels turned the other way, so only a reader that applies the tag
puts the rectangle at `BOX`, where a labelling tool drew it.
"""

import struct

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 72, 48
BOX = (40.0, 8.0, 64.0, 28.0)
DARK, BRIGHT = 30, 230

# Stored pixels from displayed ones: the inverse of each orientation's display turn.
_STORE = {
    1: lambda a: a,
    3: lambda a: a[::-1, ::-1],
    6: lambda a: np.rot90(a, k=1),
    8: lambda a: np.rot90(a, k=-1),
}

# kind -> (file name, orientation, how the file is written)
KINDS = {
    "jpeg_o3": ("o3.jpg", 3, "jpeg"),
    "jpeg_o6": ("o6.jpeg", 6, "jpeg"),
    "jpeg_o8_upper": ("O8.JPG", 8, "jpeg"),
    "png_o6_trailing_exif": ("o6_trailing.png", 6, "png_trailing"),
    "tiff_o8": ("o8.tif", 8, "tiff"),
    "webp_o6": ("o6_webp.webp", 6, "webp"),
    "cmyk_jpeg": ("cmyk.jpg", 1, "cmyk"),
    "gray16_png": ("gray16.png", 1, "gray16"),
    "palette_alpha_png": ("palette.png", 1, "palette"),
    "gray_alpha_png": ("la.png", 1, "la"),
    "gray_jpeg": ("gray.JPEG", 1, "gray"),
    "bmp": ("plain_bmp.BMP", 1, "bmp"),
    "tiff": ("plain_tiff.TIFF", 1, "tiff"),
    "rgba_png": ("rgba.PNG", 1, "rgba"),
}
LOSSLESS = ("png_o6_trailing_exif", "tiff_o8", "webp_o6", "gray16_png", "palette_alpha_png",
            "gray_alpha_png", "bmp", "tiff", "rgba_png")


def displayed(width=WIDTH, height=HEIGHT, box=BOX):
    """(height, width) uint8 grey picture: DARK with a BRIGHT rectangle at box (xyxy)."""
    image = np.full((height, width), DARK, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    image[y1:y2, x1:x2] = BRIGHT
    return image


def exif(orientation):
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def write(folder, kind, picture=None):
    """Write `kind` (a KINDS key) into folder; returns its path. picture: (H, W) uint8
    displayed grey picture (default `displayed()`)."""
    name, orientation, how = KINDS[kind]
    gray = np.ascontiguousarray(_STORE[orientation](displayed() if picture is None else picture))
    rgb = Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    path = folder / name
    tag = {"exif": exif(orientation)} if orientation != 1 else {}
    if how == "jpeg":
        rgb.save(path, format="JPEG", quality=95, **tag)
    elif how == "png_trailing":
        rgb.save(path, format="PNG", **tag)
        path.write_bytes(_exif_after_pixels(path.read_bytes()))
    elif how == "tiff":
        rgb.save(path, format="TIFF", **tag)
    elif how == "webp":
        rgb.save(path, format="WEBP", lossless=True, **tag)
    elif how == "cmyk":
        rgb.convert("CMYK").save(path, format="JPEG", quality=95)
    elif how == "gray16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path, format="PNG")
    elif how == "palette":
        indices = (gray == BRIGHT).astype(np.uint8)
        image = Image.frombytes("P", (gray.shape[1], gray.shape[0]), indices.tobytes())
        image.putpalette([DARK] * 3 + [BRIGHT] * 3 + [0, 0, 0])
        image.save(path, format="PNG", transparency=2)  # an unused entry: nothing is see-through
    elif how == "la":
        Image.fromarray(np.dstack([gray, np.full_like(gray, 255)])).save(path, format="PNG")
    elif how == "rgba":
        alpha = np.full_like(gray, 255)
        Image.fromarray(np.dstack([gray, gray, gray, alpha])).save(path, format="PNG")
    elif how == "gray":
        Image.fromarray(gray).save(path, format="JPEG", quality=95)
    else:
        rgb.save(path, format="BMP")
    return path


def _exif_after_pixels(data):
    """PNG bytes with the eXIf chunk moved after the IDAT chunks (as some editors write)."""
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(data[position : position + 12 + length])
        position += 12 + length
    exif_chunk = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    return data[:8] + b"".join(rest[:-1] + exif_chunk + rest[-1:])
