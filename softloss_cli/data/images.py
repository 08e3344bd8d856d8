"""Decode one image file into the uint8 tensor every image dataset trains on.

``load_image(path, image_size, channels)`` returns ``[channels, image_size, image_size]``
uint8: the file's pixels brought to 8-bit RGB (or L), the shorter side resized to
``image_size`` (bilinear, antialiased by PIL when shrinking) and the centre cropped to a
square. The conversions that a plain ``img.convert('RGB')`` gets wrong:

- EXIF orientation (phone photos): applied first (``ImageOps.exif_transpose``);
- 16-bit images (``I;16*``, ``I``): scaled from 0..65535 to 0..255 (``round(v / 257)``),
  not clipped (clipping turns most 16-bit images white); float images (``F``) in 0..1 are
  scaled by 255, others are treated as 16-bit;
- transparency (``RGBA``, ``LA``, palette or RGB images with a transparent colour): composited
  on a **white** background, as a viewer shows them on a page; dropping the alpha channel
  would expose whatever colour the transparent pixels happen to store (often black);
- palette (``P``), bilevel (``1``), CMYK, YCbCr, LAB...: converted by PIL to RGB / L.

``channels=1`` takes the ITU-R 601 luma of the RGB image (PIL's ``L``).
"""

from __future__ import annotations

import numpy as np
import torch

from softloss_cli.errors import SoftlossError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
BACKGROUND = (255, 255, 255)  # what transparent pixels become
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_8bit_rgb_or_l(img):
    """A PIL image in mode ``RGB`` or ``L`` with the conversions of the module docstring."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode == "F":
        values = np.asarray(img, dtype=np.float64)
        if mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        else:
            values = values / 257.0
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA") or (mode in ("RGB", "L") and "transparency" in img.info):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("RGB", "L"):
        return img
    if mode == "1":
        return img.convert("L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def load_image(path: str, image_size: int, channels: int) -> torch.Tensor:
    """uint8 ``[channels, image_size, image_size]``: converted (module docstring), shorter side
    resized, centre-cropped. An unreadable file raises ``SoftlossError`` naming it (one line)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            img = to_8bit_rgb_or_l(opened)
            img = img.convert("RGB" if channels == 3 else "L")
            w, h = img.size
            scale = image_size / min(w, h)
            new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            img = img.resize((new_w, new_h), Image.BILINEAR)
            left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            array = np.array(img, dtype=np.uint8)  # a copy: PIL buffers are read-only
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SoftlossError(f"cannot read image {path}: {reason}") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def is_image_file(name: str) -> bool:
    """A file name with an image extension (case-insensitive), not hidden."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
