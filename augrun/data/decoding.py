"""Decode one image file into RGB/grayscale uint8 pixels, safely.

`decode_image` is the only place augrun opens an image file: image-folder datasets (augrun.data.datasets) and
``augrun preview image=...`` (augrun.commands.preview) both call it, so both refuse the same files with the same words and
decode the same files to the same pixels. Safely means: an image above MAX_PIXELS is refused from its header, before
its pixels are decoded (a few-KB PNG can claim gigabytes of pixels); 16-bit files are scaled to 8 bits instead of being
clipped; EXIF rotation is applied; and every failure is an `ImageFileError` whose message is one line, naming the file
with `printable` so that no file name can break that line.

No torch here: preview reports a bad image before importing it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from augrun.errors import printable

# PIL's own default for Image.MAX_IMAGE_PIXELS (1024**3 // 4 // 3, a 9459x9459 picture, 268 MB as RGB): far above
# any photo a camera takes or an image a classifier trains on, and low enough that a decoding process cannot be made
# to allocate gigabytes by a small file. Our own constant, so that a library raising PIL's global does not lift it.
MAX_PIXELS = 89_478_485

# 16-bit grayscale modes (PIL opens 16-bit grayscale PNGs and TIFFs as I;16, older versions as I): PIL's convert()
# clips them to 0..255, which turns a whole 16-bit picture white, and turns floats in [0, 1] (mode F) black, so these
# are scaled to 8 bits here instead (_eight_bits). PIL opens 16-bit RGB(A) PNGs as 8-bit RGB(A) already (it keeps the
# high byte), so only one-channel modes need this.
WIDE_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
GRAY_MODES = ("1", "L", "LA", "La", "F", *WIDE_GRAY_MODES)  # files that keep one channel when the caller allows it
VALID_IMAGE = "valid: an image file (PNG, JPEG, BMP, ...)"
# modes PIL opens and "converts" without their meaning: refused rather than trained on in wrong colours
UNCONVERTIBLE_MODES = {"LAB": "CIE L*a*b* needs colour management, which PIL's convert() does not do"}
EXIF_ORIENTATION = 0x0112  # the EXIF tag phones set instead of rotating the pixels


class ImageFileError(ValueError):
    """An image file that cannot or must not be decoded: one line naming the file and what would be valid. Callers
    put their key in front (dataset.root, image)."""


def decode_image(path: Path, *, channels: int | None = 3) -> np.ndarray:
    """The pixels of one image file as uint8 (H, W, C), EXIF rotation applied.

    ``channels``: 3 gives RGB, 1 gives grayscale, None keeps grayscale files (GRAY_MODES) at one channel and gives
    RGB for the rest. Alpha is dropped, as torchvision's image loader does.
    """
    pixels = np.array(_decoded(path, channels))  # a copy the caller owns (asarray's is read-only)
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def open_rgb(path: Path) -> Image.Image:
    """One image file as a decoded RGB PIL image, EXIF rotation applied, with decode_image's checks and errors: the
    form torchvision's PIL ops take, so a streamed photo is decoded without a copy through numpy."""
    return _decoded(path, 3)


def read_header(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, with decode_image's checks of the header and its errors; the pixels
    are not decoded (a streamed folder checks every file this way before training)."""
    return _decoded(path, None, header_only=True)


def _decoded(path: Path, channels: int | None, *, header_only: bool = False):
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it; an error instead, so that no size gets through.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: reads the header only
                _check_size(path, image.width * image.height, f"{image.width}x{image.height}")
                if header_only:
                    return image.size
                return _converted(_upright(image), channels, path)
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # PIL's check in Image.open
        _check_size(path, _pixels_in_pil_message(error), "")
        # under augrun's limit, so the program lowered PIL's: that limit is what holds
        raise ImageFileError(f"{printable(path)}: {_reason(error)}; valid: an image of at most "
                             f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Exception as error:  # a damaged file makes PIL's decoders raise almost any type (struct.error, EOFError...)
        raise ImageFileError(f"cannot decode {printable(path)} ({_reason(error)}); {VALID_IMAGE}") from None


def _check_size(path: Path, pixels: int | None, dimensions: str) -> None:
    if pixels is not None and pixels > MAX_PIXELS:
        size = f"{dimensions} = {pixels} pixels" if dimensions else f"{pixels} pixels"
        raise ImageFileError(f"{printable(path)} is {size}, above the limit of {MAX_PIXELS} pixels (refused unread: "
                             f"it could be a decompression bomb); valid: an image of at most {MAX_PIXELS} pixels")


def _pixels_in_pil_message(error: Exception) -> int | None:
    """The size PIL names in its decompression-bomb message ("Image size (N pixels) exceeds ..."): PIL raises it from
    Image.open, before there is an image to ask."""
    words = str(error).replace("(", " ").split()
    return int(words[2]) if len(words) > 2 and words[:2] == ["Image", "size"] and words[2].isdigit() else None


def _upright(image: Image.Image) -> Image.Image:
    # exif_transpose copies even an upright image; a photo streamed every epoch should not pay for that copy
    if image.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def _converted(image: Image.Image, channels: int | None, path: Path) -> Image.Image:
    """A loaded image in mode L (channels 1) or RGB (3; None: L for grayscale files), independent of the file."""
    if image.mode in UNCONVERTIBLE_MODES:
        raise ImageFileError(f"{printable(path)} is an image of Pillow's mode {image.mode}, which augrun cannot turn into "
                             f"RGB ({UNCONVERTIBLE_MODES[image.mode]}); {VALID_IMAGE} in an RGB or grayscale mode")
    if image.mode in WIDE_GRAY_MODES or image.mode == "F":
        image = Image.fromarray(_eight_bits(np.asarray(image), image.mode, path))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when such a palette goes straight to RGB
    if channels is None:
        channels = 1 if image.mode in GRAY_MODES else 3
    mode = "L" if channels == 1 else "RGB"
    if image.mode == mode:
        image.load()  # decoded now, while the file is open; the caller gets pixels, not a file handle
        return image
    try:
        return image.convert(mode)
    except ValueError as error:  # a mode PIL opens but cannot convert (LAB, La): refused, named
        raise ImageFileError(f"{printable(path)} is an image of Pillow's mode {image.mode}, which augrun cannot turn into "
                             f"{mode} ({_reason(error)}); {VALID_IMAGE} in an RGB or grayscale mode") from None


def _eight_bits(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """Samples wider than 8 bits, scaled to 8 by their real range: 16-bit integers (0..65535; mode I holds them in 32
    bits, as older PILs open 16-bit PNGs) by their high byte, floats in [0, 1] by 255. Values outside those ranges
    have no agreed meaning in 8 bits (a 32-bit count, an HDR float): refused, with the range found."""
    if mode == "F":
        if np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1:
            return np.round(values * 255).astype(np.uint8)
        kind, valid = "a 32-bit float image (Pillow's mode F)", "floats in [0, 1]"
    elif values.min() >= 0 and values.max() <= 65535:
        return (values >> 8).astype(np.uint8)
    else:
        kind, valid = f"an integer image of Pillow's mode {mode}", "integers in 0..65535 (8 or 16 bits)"
    found = f"{values.min():g}..{values.max():g}" if np.isfinite(values).all() else "not all finite"
    raise ImageFileError(f"{printable(path)} is {kind} with values {found}; valid: an image file whose samples are "
                         f"8-bit, or {valid}")


def _reason(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "not an image format PIL can read"  # PIL's own message repeats the path
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # without the path str(error) adds
    return printable(" ".join(str(error).split())).rstrip(".") or type(error).__name__  # no "attack.;" in ours
