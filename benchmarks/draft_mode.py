"""Does PIL's JPEG draft mode help streamed photos? (issue #14: measure before using it.)

Draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg, much faster than a full decode. It is only safe when
even the smallest crop RandomResizedCrop may take still holds at least image_size pixels a side, so the crop is never
upsampled from fewer pixels than a full decode would give: reduced shorter side * sqrt(min scale) >= image_size. This
script finds that reduction for photos of several sizes and measures, per photo: decode time full vs draft, and how
far the crop + resize to image_size moves (mean and max absolute difference on a 0-255 scale, same crop in relative
coordinates).

    python benchmarks/draft_mode.py [--image-size 224] [--min-scale 0.08] [--repeats 20]
"""
from __future__ import annotations

import argparse
import io
import math
import statistics
import time

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int) -> bytes:
    """A smooth random photo-like JPEG (quality 90): low-frequency colour fields plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def largest_safe_reduction(shorter: int, image_size: int, min_scale: float) -> int:
    """The largest of 1, 2, 4, 8 that keeps the smallest crop at >= image_size pixels a side."""
    return max(r for r in (1, 2, 4, 8) if (shorter / r) * math.sqrt(min_scale) >= image_size or r == 1)


def decode(data: bytes, reduction: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    if reduction > 1:
        image.draft("RGB", (image.width // reduction, image.height // reduction))
    return image.convert("RGB")


def crop_resize(image: Image.Image, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The same relative crop box, resized to size x size as RandomResizedCrop does (bilinear, antialiased)."""
    w, h = image.size
    left, top, right, bottom = box
    cropped = image.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))
    return np.asarray(cropped.resize((size, size), Image.BILINEAR), dtype=np.int16)


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--min-scale", type=float, default=0.08, help="RandomResizedCrop's scale[0] (default 0.08)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    side = math.sqrt(args.min_scale)  # the smallest crop's side, relative (square crop)
    start = (1 - side) / 2  # the smallest crop, centred
    boxes = {"smallest crop": (start, start, start + side, start + side), "whole photo": (0.0, 0.0, 1.0, 1.0)}
    print(f"image_size {args.image_size}, min scale {args.min_scale}; median of {args.repeats} decodes")
    print(f"{'photo':>11} {'reduction':>9} {'full ms':>8} {'draft ms':>8} {'speed-up':>8}  "
          + "  ".join(f"{name}: mean/max diff" for name in boxes))
    for width, height in ((500, 375), (1024, 768), (2048, 1536), (4032, 3024)):
        data = photo_like(width, height, seed=width)
        reduction = largest_safe_reduction(min(width, height), args.image_size, args.min_scale)
        full_ms = timed(lambda: decode(data, 1), args.repeats) * 1000
        draft_ms = timed(lambda: decode(data, reduction), args.repeats) * 1000
        full, draft = decode(data, 1), decode(data, reduction)
        diffs = []
        for box in boxes.values():
            difference = np.abs(crop_resize(full, box, args.image_size) - crop_resize(draft, box, args.image_size))
            diffs.append(f"{difference.mean():.2f}/{difference.max()}")
        print(f"{width:>5}x{height:<5} {reduction:>9} {full_ms:>8.1f} {draft_ms:>8.1f} {full_ms / draft_ms:>7.2f}x  "
              + "  ".join(f"{d:>24}" for d in diffs))


if __name__ == "__main__":
    main()
