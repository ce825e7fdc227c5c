"""Lossless image codecs: the compressors of the input-complexity score (Serra et al., ICLR 2020).

A lossless code of $L(x)$ bits is a probability $2^{-L(x)}$: a generic image model.
:func:`compressed_bits` gives $L(x)$ per image, counting the whole file as written (signature,
headers and trailers included); :func:`compressor_id` names a codec with its settings and the
versions of the libraries that write it, so cached lengths change when any of them does.
Every codec round-trips bit-exactly (``decode(encode(x)) == x``, tested at both geometries).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np
import PIL
from PIL import Image, features

# Lossless encoder per codec: the library that writes it and its settings. Serra et al. (2020)
# used PNG, JPEG 2000 and FLIF; FLIF is not installable here, JPEG XL (lossless) is its
# successor. Settings were chosen by timing ~200 images per codec (remedies chapter):
# - PNG: Pillow, maximum zlib compression (the setting of Serra et al.'s PNG and of the
#   independent replication's PNG level 9);
# - WebP: Pillow, lossless; method 4 (of 0-6): 2.6 ms and 1,785 bytes per CIFAR-10 image
#   against 68 ms and 1,820 bytes with method 6 (measured here);
# - JPEG 2000: imagecodecs (OpenJPEG), reversible 5/3 wavelet (level 0 = lossless);
# - JPEG XL: imagecodecs (libjxl), lossless, effort 7: 5.5 ms and 1,558 bytes per CIFAR-10
#   image against 13 ms and 1,568 bytes at effort 9 (measured here with two trainings running).
CODECS: dict[str, tuple[str, dict[str, object]]] = {
    "png": ("PNG", {"optimize": True, "compress_level": 9}),
    "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 4}),
    "jpeg2000": ("JPEG2K", {"level": 0}),
    "jpegxl": ("JPEGXL", {"lossless": True, "effort": 7}),
}
# Codecs written by imagecodecs (the others by Pillow).
IMAGECODECS = ("jpeg2000", "jpegxl")


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {sorted(CODECS)}")
    if codec == "webp" and not features.check("webp"):
        raise RuntimeError(
            f"this Pillow ({PIL.__version__}) was built without WebP support "
            "(PIL.features.check('webp') is False): install a Pillow wheel with libwebp, "
            "or use codec='png'")


def compressor_id(codec: str) -> str:
    """The codec, its settings and library versions: compressed lengths depend on all of them,
    so a cache of :func:`compressed_bits` should key on this string."""
    _check_codec(codec)
    fmt, options = CODECS[codec]
    settings = ", ".join(f"{k}={v}" for k, v in options.items())
    if codec in IMAGECODECS:
        lib = {"jpeg2000": "openjpeg", "jpegxl": "libjxl"}[codec]
        version = imagecodecs.version(dict)[lib]
        return f"{fmt} ({settings}); imagecodecs {imagecodecs.__version__}; {lib} {version}"
    lib = "webp" if codec == "webp" else "zlib"
    return f"{fmt} ({settings}); Pillow {PIL.__version__}; {lib} {features.version(lib)}"


def encode(image: np.ndarray, codec: str) -> bytes:
    """One uint8 image ``[C, H, W]`` (C = 1 grey or 3 RGB) as the bytes of a lossless file.
    WebP has no grey mode: Pillow stores a grey image as RGB with three equal channels."""
    _check_codec(codec)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 image [C, H, W] with C = 1 or 3, got "
                         f"{image.dtype} {image.shape}")
    hwc = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    fmt, options = CODECS[codec]
    if codec in IMAGECODECS:
        return bytes(getattr(imagecodecs, f"{fmt.lower()}_encode")(hwc, **options))
    pil = Image.fromarray(hwc)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes, codec: str) -> np.ndarray:
    """The uint8 image ``[C, H, W]`` of a file written by :func:`encode` (WebP gives a grey
    image back as three equal channels)."""
    _check_codec(codec)
    if codec in IMAGECODECS:
        hwc = np.asarray(getattr(imagecodecs, f"{CODECS[codec][0].lower()}_decode")(data))
    else:
        hwc = np.asarray(Image.open(io.BytesIO(data)))
    return hwc[None] if hwc.ndim == 2 else hwc.transpose(2, 0, 1)


def compressed_bits(images: np.ndarray, codec: str) -> np.ndarray:
    r"""$L(x)$: the length in bits of each uint8 image of ``images`` ``[N, C, H, W]`` compressed
    losslessly with ``codec`` (:data:`CODECS`: its library and settings). The whole file as
    written is counted, headers included (see the module docstring). Raises a RuntimeError if
    Pillow lacks WebP. Cache the result, keyed on :func:`compressor_id`. The images are encoded
    on one thread per CPU this process may use (the codecs release the GIL); each image's
    length does not depend on the others, so the result is the same on any number."""
    _check_codec(codec)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got shape {images.shape}")
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        # L(x) = 8 * (bytes of the file)
        return np.fromiter(pool.map(lambda image: 8 * len(encode(image, codec)), images),
                           dtype=np.int64, count=len(images))
