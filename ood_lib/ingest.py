"""The reader's own images brought to a model's geometry: folders and ``.npz`` files read, each
image converted (orientation, 8-bit mode, alpha, channels, size) with a note of every step.

The steps, in the order :data:`STEPS` gives them (``ood-score --help`` prints it), are
orientation, 8-bit mode, alpha, channels and size; the CSV of ``ood-score`` has each image's
notes in its ``converted`` column.

An ``.npz`` whose images already have the model's geometry is used as is; any other ``.npz``
image goes through steps 2-5 as an ``L``, ``RGB`` or ``RGBA`` image. Unreadable files are
listed and skipped; nothing readable at all is an :class:`ImageInputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ood_lib import transforms

# How an image is brought to a model's geometry, in order (printed by ``ood-score --help``).
STEPS = """\
1. Orientation. The EXIF orientation tag is applied (PIL.ImageOps.exif_transpose), so the
   image is scored as a viewer shows it. Animated GIF/WebP, multi-page TIFF: first frame only.
2. Mode to 8 bits. L and RGB are kept; RGBA and LA keep their alpha for step 3; 1 (bilevel)
   becomes L; palette P becomes RGBA when it has transparency, else RGB; PA, RGBa, La, and
   L/RGB with a transparency colour key become RGBA/LA. 16-bit grey (I;16, I;16B, ...) and
   32-bit integer I (how some readers return 16-bit grey) are read as levels v in 0..65535
   (I clipped to that range) and scaled to round(255 v / 65535), computed exactly as
   (255 v + 32767) // 65535: 0 -> 0, 65535 -> 255, 257 k -> k. Float F is clipped to 0..255
   and rounded. CMYK (Pillow's plain conversion, no ICC profile), YCbCr, LAB, HSV, RGBX and
   any other mode become RGB. 16-bit colour PNGs are reduced to 8 bits by Pillow on opening.
3. Alpha. Dropped by compositing over white (--alpha-background white, the default) or black:
   c' = round(c a/255 + b (1 - a/255)), computed exactly as (c a + b (255 - a) + 127) // 255.
4. Channels. For a grey model, colour becomes grey by ITU-R BT.601 luma,
   Y = (299 R + 587 G + 114 B + 500) // 1000 (the book's rule, transforms.luma);
   for an RGB model, grey becomes RGB by repeating the channel three times.
5. Size. The shorter side is resized to the target s (28 grey, 32 RGB) and the longer side
   in proportion (rounded, at least s), with Pillow's bilinear filter (which antialiases when
   it shrinks), up or down; then the centre s x s square is cropped at offsets
   ((w' - s) // 2, (h' - s) // 2): an odd excess loses its extra pixel on the right or
   bottom. An image already s x s is not resampled.
"""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BACKGROUNDS = {"white": 255, "black": 0}
# A progress bar for loading when a run holds at least this many images.
PROGRESS_MIN_IMAGES = 100


class ImageInputError(ValueError):
    """Nothing to score at the path given: not a folder or ``.npz``, or no readable image."""


def scale_16bit(levels: np.ndarray) -> np.ndarray:
    """16-bit levels ``v`` (clipped to 0..65535) -> uint8 ``round(255 v / 65535)``, computed
    exactly in integers as ``(255 v + 32767) // 65535``."""
    v = np.clip(np.asarray(levels, np.int64), 0, 65535)
    return ((255 * v + 32767) // 65535).astype(np.uint8)


def composite_alpha(colour: np.ndarray, alpha: np.ndarray, background: int) -> np.ndarray:
    """uint8 ``colour`` ``(H, W, C)`` over a constant ``background`` level through ``alpha``
    ``(H, W)``: ``round(c a/255 + b (1 - a/255))``, exactly in integers."""
    c = colour.astype(np.int64)
    a = alpha.astype(np.int64)[..., None]
    # c' = floor((c a + b (255 - a) + 127) / 255)
    return ((c * a + background * (255 - a) + 127) // 255).astype(np.uint8)


Box = tuple[int, int, int, int]


def resize_geometry(width: int, height: int, size: int) -> tuple[tuple[int, int], Box]:
    """The resized ``(w', h')`` (shorter side = ``size``, longer side in proportion, rounded)
    and the centre crop box ``(left, top, right, bottom)`` of ``size x size`` in it."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    short = min(width, height)
    new_w = size if width == short else max(size, round(width * size / short))
    new_h = size if height == short else max(size, round(height * size / short))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return (new_w, new_h), (left, top, left + size, top + size)


def to_8bit(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """Step 2 of the module docstring: any Pillow mode -> ``L``, ``LA``, ``RGB`` or ``RGBA``
    (8 bits per channel, alpha kept for :func:`drop_alpha`), with what was done."""
    mode = img.mode
    if mode in ("L", "RGB") and img.has_transparency_data:  # a tRNS colour key
        target = "LA" if mode == "L" else "RGBA"
        return img.convert(target), [f"{mode} transparency key->{target}"]
    if mode in ("L", "RGB", "LA", "RGBA"):
        return img, []
    if mode == "1":
        return img.convert("L"), ["1-bit->L"]
    if mode == "P":
        target = "RGBA" if img.has_transparency_data else "RGB"
        return img.convert(target), [f"P->{target}"]
    if mode in ("PA", "RGBa"):
        return img.convert("RGBA"), [f"{mode}->RGBA"]
    if mode == "La":
        return img.convert("LA"), ["La->LA"]
    if mode.startswith("I;16") or mode == "I":
        levels = np.asarray(img)
        return Image.fromarray(scale_16bit(levels), "L"), [f"{mode}->L (16-bit levels x 255/65535)"]
    if mode == "F":
        levels = np.clip(np.rint(np.asarray(img, np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(levels, "L"), ["F->L (clipped to 0..255, rounded)"]
    return img.convert("RGB"), [f"{mode}->RGB"]


def drop_alpha(img: Image.Image, background: int) -> tuple[np.ndarray, list[str]]:
    """Step 3: an ``L``/``LA``/``RGB``/``RGBA`` image -> uint8 ``(H, W, C)``, C = 1 or 3, any
    alpha composited over the ``background`` level."""
    x = np.asarray(img)
    if img.mode in ("L", "RGB"):
        return (x[..., None] if x.ndim == 2 else x), []
    name = {255: "white", 0: "black"}.get(background, str(background))
    return composite_alpha(x[..., :-1], x[..., -1], background), [f"alpha over {name}"]


def to_channels(x: np.ndarray, channels: int) -> tuple[np.ndarray, list[str]]:
    """Step 4: uint8 ``(H, W, C)`` -> ``(H, W, channels)`` (BT.601 luma or a repeated channel)."""
    if x.shape[-1] == channels:
        return x, []
    if channels == 1:
        return transforms.luma(x)[..., None], ["RGB->L (BT.601 luma)"]
    return np.repeat(x, 3, axis=-1), ["L->RGB (channel repeated)"]


def to_size(x: np.ndarray, size: int) -> tuple[np.ndarray, list[str]]:
    """Step 5: uint8 ``(H, W, C)`` -> ``(size, size, C)``: shorter side resized to ``size``
    (bilinear), then the centre square cropped."""
    h, w, c = x.shape
    if (w, h) == (size, size):
        return x, []
    (new_w, new_h), box = resize_geometry(w, h, size)
    notes = []
    img = Image.fromarray(x[..., 0] if c == 1 else x, "L" if c == 1 else "RGB")
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        notes.append(f"resized {w}x{h}->{new_w}x{new_h} (bilinear)")
    if (new_w, new_h) != (size, size):
        img = img.crop(box)
        notes.append(f"centre-cropped to {size}x{size} at ({box[0]}, {box[1]})")
    out = np.asarray(img)
    return (out[..., None] if out.ndim == 2 else out), notes


def convert_image(img: Image.Image, channels: int, size: int,
                  background: int = 255) -> tuple[np.ndarray, str]:
    """An opened image -> uint8 ``(size, size, channels)`` by steps 1-5 of the module docstring,
    and a description of the steps taken (``"none"`` when the image already fit)."""
    notes = []
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
    oriented = ImageOps.exif_transpose(img)
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} applied")
    oriented, n = to_8bit(oriented)
    notes += n
    x, n = drop_alpha(oriented, background)
    notes += n
    x, n = to_channels(x, channels)
    notes += n
    x, n = to_size(x, size)
    notes += n
    return np.ascontiguousarray(x), "; ".join(notes) or "none"


def convert_array(x: np.ndarray, channels: int, size: int,
                  background: int = 255) -> tuple[np.ndarray, str]:
    """One uint8 image ``(H, W)`` or ``(H, W, C)`` (C = 1, 3, 4) from an ``.npz`` -> the model's
    geometry (steps 2-5); unchanged if it already has it."""
    x = x[..., None] if x.ndim == 2 else x
    if x.shape == (size, size, channels):
        return x, "none"
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[x.shape[-1]]
    img = Image.fromarray(x[..., 0] if mode == "L" else x, mode)
    return convert_image(img, channels, size, background)


# --- loading --------------------------------------------------------------------------------


@dataclass
class Loaded:
    """The user's images in the model's geometry, one row of metadata each, and what was
    skipped (``(file, reason)``)."""

    images: np.ndarray  # uint8 (N, size, size, channels)
    rows: list[dict]
    skipped: list[tuple[str, str]]
    ignored: int  # files in the folder that are not images by their suffix


def image_files(folder: Path, recursive: bool = False) -> tuple[list[Path], int]:
    """The image files of ``folder`` by suffix (sorted), and the number of other files."""
    found = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(found) - len(images)


def _progress(items, desc: str, total: int):
    return tqdm(items, desc=desc, total=total, leave=False, disable=total < PROGRESS_MIN_IMAGES)


def load_folder(folder: Path, channels: int, size: int, background: int,
                recursive: bool = False) -> Loaded:
    files, ignored = image_files(folder, recursive)
    images, rows, skipped = [], [], []
    for path in _progress(files, "loading images", len(files)):
        name = str(path.relative_to(folder))
        try:
            with Image.open(path) as img:
                img.load()
                width, height, mode = img.width, img.height, img.mode
                x, converted = convert_image(img, channels, size, background)
        except Exception as exc:  # any unreadable or unconvertible file is reported, not fatal
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        images.append(x)
        rows.append({"file": name, "width": width, "height": height, "mode": mode,
                     "converted": converted})
    return Loaded(_stack(images, channels, size), rows, skipped, ignored)


def load_npz(path: Path, channels: int, size: int, background: int) -> Loaded:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise ImageInputError(f"{path} has no array 'x' (it holds {f.files})")
            x = f["x"]
    except (OSError, ValueError) as exc:
        raise ImageInputError(f"cannot read {path} as .npz: {exc}") from exc
    if x.dtype != np.uint8:
        raise ImageInputError(f"{path}: 'x' must hold uint8 levels 0..255, got dtype {x.dtype}")
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3, 4))):
        raise ImageInputError(f"{path}: 'x' must be images (N, H, W, C) with C in 1, 3, 4 or "
                         f"(N, H, W), got shape {x.shape}")
    images, rows = [], []
    for i in _progress(range(len(x)), "converting images", len(x)):
        img, converted = convert_array(x[i], channels, size, background)
        images.append(img)
        h, w = x.shape[1:3]
        c = x.shape[3] if x.ndim == 4 else 1
        rows.append({"file": f"{path.name}[{i}]", "width": w, "height": h,
                     "mode": {1: "L", 3: "RGB", 4: "RGBA"}[c], "converted": converted})
    return Loaded(_stack(images, channels, size), rows, [], 0)


def _stack(images: list[np.ndarray], channels: int, size: int) -> np.ndarray:
    if not images:
        return np.zeros((0, size, size, channels), np.uint8)
    return np.stack(images)


def load_path(path: Path, channels: int, size: int, background: int,
              recursive: bool = False) -> Loaded:
    """Images from a folder or an ``.npz`` (see the module docstring); a clear
    :class:`ImageInputError` when there is nothing to score."""
    if path.is_dir():
        loaded = load_folder(path, channels, size, background, recursive)
        where = f"folder {path}" + (" (recursively)" if recursive else "")
    elif path.is_file() and path.suffix.lower() == ".npz":
        loaded = load_npz(path, channels, size, background)
        where = f"{path}"
    elif path.exists():
        raise ImageInputError(f"{path} is neither a folder of images nor an .npz file")
    else:
        raise ImageInputError(f"{path} does not exist")
    if not loaded.rows:
        why = (f"; {len(loaded.skipped)} unreadable file(s) skipped" if loaded.skipped else "")
        raise ImageInputError(f"no readable image in {where} (image files end in "
                         f"{' '.join(IMAGE_SUFFIXES)}{why})")
    return loaded
