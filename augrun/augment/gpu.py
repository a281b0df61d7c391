"""Per-sample batched augmentation ops on device tensors (the ``gpu`` backend).

Each op takes torchvision.transforms.v2's constructor keyword arguments, and is called as
``op(images, generator) -> images`` on a float batch (N, C, H, W) in [0, 1], C = 1 or 3. Every image gets its
own random parameters, drawn from the same distribution as torchvision's op; all draws come from ``generator``
(a torch.Generator on the images' device), so a seed fixes the output. The ops are plain torch: no Python loop
over samples and no host synchronisation (.item(), bool(tensor), boolean-mask indexing), so a CUDA step never
waits for the GPU.

The arguments are parsed by building the torchvision transform itself and reading back its public attributes,
so ranges, defaults and error messages are torchvision's own.

Differences from torchvision shared by all ops (op docstrings list their own):
- Colour maths stays in float. The book's cpu path runs on PIL images, which round to uint8 after every
  colour adjustment and resize; torchvision's float-tensor path (our reference in tests) does not.
- Parameters are drawn with ``generator``, not torch's global RNG, so the same seed gives a different (equally
  distributed) stream than the cpu backend.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import InterpolationMode

__all__ = [
    "BATCH_OP_CLASSES",
    "GPU_OPS",
    "ColorJitter",
    "CutMix",
    "GpuPipeline",
    "MixUp",
    "MixUpCutMix",
    "Normalize",
    "RandomCrop",
    "RandomErasing",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "crop_padded",
    "resized_crop",
    "sample_beta",
]

# ITU-R 601-2 luma, the weights torchvision (and PIL's "L" mode) use.
_LUMA = (0.2989, 0.587, 0.114)
# Candidates drawn per sample where torchvision retries in a loop (RandomResizedCrop, RandomErasing).
_TRIES = 10


# --- random draws: one value per sample, all from the caller's generator ------------------------------------


def _rand(shape, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    # float64 for parameters (a few numbers per sample, cheap): float32 products like u * 33 can round up
    # to 33 and make an out-of-range integer offset.
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def _uniform(shape, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * _rand(shape, generator)


def _bernoulli(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    # torchvision applies a random op when torch.rand(1) < p.
    return _rand(n, generator) < p


def _randint(high, generator: torch.Generator, shape=()) -> torch.Tensor:
    """Uniform integers in [0, high); ``high`` an int, or an int tensor for per-sample bounds (torch.randint
    only takes a Python bound)."""
    if isinstance(high, torch.Tensor):
        shape = high.shape
    return (_rand(shape, generator) * high).floor().long().clamp(max=high - 1)


@functools.lru_cache(maxsize=None)
def _const(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, copied to the device once: every torch.tensor(list, device="cuda") is a
    blocking host-to-device copy. Shared between calls, so never modify it in place."""
    return torch.tensor(values, device=device, dtype=dtype)


def _first(candidates: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the first candidate that is valid (what a retry loop returns) and whether any was."""
    index = valid.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    return candidates.gather(1, index).squeeze(1), valid.any(dim=1)


def _box_candidates(n, height, width, scale, ratio, generator):
    """``_TRIES`` (sqrt(area * r), sqrt(area / r)) pairs per sample, rounded as torchvision's get_params does.

    ``round`` in Python and torch.round both round half to even.
    """
    area = height * width * _uniform((n, _TRIES), scale[0], scale[1], generator)
    aspect = torch.exp(_uniform((n, _TRIES), math.log(ratio[0]), math.log(ratio[1]), generator))
    return torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()


def _view(x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1), to broadcast a per-sample value over an image batch."""
    return x.view(-1, 1, 1, 1)


def _span_mask(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) bool: start <= i < start + length."""
    i = torch.arange(size, device=start.device)
    return (i >= start[:, None]) & (i < (start + length)[:, None])


# --- flips, grayscale, normalise ------------------------------------------------------------------------------


class _RandomApply:
    """Applies ``_apply`` to a per-sample Bernoulli(p) subset, as torchvision's _RandomApplyTransform per image."""

    def __init__(self, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError("`p` should be a floating point value in the interval [0.0, 1.0].")
        self.p = p

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = _view(_bernoulli(images.shape[0], self.p, generator))
        return torch.where(mask, self._apply(images), images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomApply):
    """torchvision.transforms.v2.RandomHorizontalFlip, per sample. Exact."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def _apply(self, images):
        return images.flip(-1)


class RandomVerticalFlip(_RandomApply):
    """torchvision.transforms.v2.RandomVerticalFlip, per sample. Exact."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def _apply(self, images):
        return images.flip(-2)


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma; a one-channel image is its own luma, as in torchvision."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).unsqueeze(1)


class RandomGrayscale(_RandomApply):
    """torchvision.transforms.v2.RandomGrayscale, per sample; keeps the channel count. C=1: a no-op."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__(p)

    def _apply(self, images):
        return _gray(images).expand_as(images)


class Normalize:
    """torchvision.transforms.v2.Normalize: (x - mean) / std per channel. Deterministic; ``generator`` is ignored.

    ``inplace`` is accepted for signature compatibility; the input is never modified.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        if any(s == 0 for s in std):
            raise ValueError(f"std evaluated to zero after conversion to float, leading to division by zero: {std}")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean = _const(tuple(self.mean), images.device, images.dtype).view(-1, 1, 1)
        std = _const(tuple(self.std), images.device, images.dtype).view(-1, 1, 1)
        return images.sub(mean).div_(std)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


# --- geometry -------------------------------------------------------------------------------------------------


def _resample_weights(start, length, in_size: int, out_size: int, antialias: bool, dtype):
    """(N, out_size, in_size) interpolation matrices for resizing [start, start + length) to out_size.

    The weights are those of torch's bilinear ``interpolate`` (align_corners=False) on the cropped image:
    a triangle filter centred at (i + 0.5) * scale, widened by scale when antialiasing a downscale (the PIL
    filter torch uses), restricted to the crop and normalised. Restricting to the crop is what clamps the
    sampling at the crop border, where sampling the full image (grid_sample) would blend in outside pixels.
    """
    length = length.to(dtype)
    scale = (length / out_size)[:, None, None]
    centre = scale * (torch.arange(out_size, device=start.device, dtype=dtype)[None, :, None] + 0.5)
    pixel = (torch.arange(in_size, device=start.device) - start[:, None])[:, None, :]  # in crop coordinates
    width = torch.where(scale > 1, scale, 1.0) if antialias else torch.ones_like(scale)
    weights = (1 - (pixel + 0.5 - centre).abs() / width).clamp_(min=0)
    weights *= (pixel >= 0) & (pixel < length[:, None, None])
    return weights / weights.sum(-1, keepdim=True)


def resized_crop(images, top, left, height, width, size: Sequence[int], antialias: bool = True) -> torch.Tensor:
    """Crop box i (top, left, height, width: int tensors (N,)) of image i and resize it to ``size`` = (h, w).

    Same result as torchvision's ``F.resized_crop`` on float tensors with bilinear interpolation, up to float
    rounding: two batched matmuls with per-sample separable weights. Under ``torch.backends.cuda.matmul.allow_tf32``
    the matmuls run in TF32 (about 1e-3 relative error).
    """
    n, _, in_h, in_w = images.shape
    # Weights at least in float32: half-precision centres would be off by whole pixels on large images.
    dtype = torch.promote_types(images.dtype, torch.float32)
    rows = _resample_weights(top, height, in_h, size[0], antialias, dtype).to(images.dtype)  # (N, h, H)
    cols = _resample_weights(left, width, in_w, size[1], antialias, dtype).to(images.dtype)  # (N, w, W)
    return rows[:, None] @ images @ cols.transpose(1, 2)[:, None]


class RandomResizedCrop:
    """torchvision.transforms.v2.RandomResizedCrop, per sample, bilinear only.

    Box sampling follows torchvision's get_params exactly in distribution: ten (area, log-ratio) candidates per
    sample, the first that fits wins, else the central-crop fallback. ``antialias`` behaves as on tensors
    (True: the PIL-style widened triangle filter when the crop is larger than ``size``); PIL images in the cpu
    backend are always antialiased and rounded to uint8.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str | InterpolationMode | int = "bilinear",
        antialias: bool | None = True,
    ) -> None:
        if interpolation not in (InterpolationMode.BILINEAR, "bilinear", 2):  # 2: PIL.Image.BILINEAR
            raise ValueError(f"RandomResizedCrop: the gpu backend supports only bilinear interpolation, got {interpolation!r}")
        tv = T.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=antialias)
        self.size, self.scale, self.ratio = tuple(tv.size), tuple(scale), tuple(ratio)
        self.antialias = bool(antialias)  # None means False for tensors

    def get_params(self, n: int, height: int, width: int, generator: torch.Generator):
        """(top, left, h, w), each an int64 tensor (N,)."""
        w, h = _box_candidates(n, height, width, self.scale, self.ratio, generator)
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        w, found = _first(w, valid)
        h, _ = _first(h, valid)
        fh, fw = self._fallback(height, width)
        h, w = torch.where(found, h, fh), torch.where(found, w, fw)
        top = torch.where(found, _randint(height - h + 1, generator), (height - fh) // 2)
        left = torch.where(found, _randint(width - w + 1, generator), (width - fw) // 2)
        return top, left, h, w

    def _fallback(self, height: int, width: int) -> tuple[int, int]:
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            return int(round(width / min(self.ratio))), width
        if in_ratio > max(self.ratio):
            return height, int(round(height * max(self.ratio)))
        return height, width

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        box = self.get_params(images.shape[0], images.shape[-2], images.shape[-1], generator)
        return resized_crop(images, *box, self.size, self.antialias)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, antialias={self.antialias})"


def _pad_index(index: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Map coordinates outside [0, size) to the pixel that torch's padding mode copies there."""
    if mode == "reflect" and size > 1:  # mirror without repeating the edge: period 2 * (size - 1)
        index = index.remainder(2 * (size - 1))
        return torch.where(index < size, index, 2 * (size - 1) - index)
    if mode == "symmetric":  # mirror repeating the edge: period 2 * size
        index = index.remainder(2 * size)
        return torch.where(index < size, index, 2 * size - 1 - index)
    return index.clamp(0, size - 1)  # edge; constant is masked by the caller


def crop_padded(images, top, left, size, padding=(0, 0, 0, 0), fill=0.0, padding_mode="constant") -> torch.Tensor:
    """Crop box (top, left: int tensors (N,), size (h, w)) of each image after padding it by
    ``padding`` = (left, right, top, bottom), without materialising the padded batch.

    Equals torchvision's ``F.pad`` then ``F.crop`` on float tensors, exactly. Unlike torch's reflect pad,
    padding wider than the image keeps mirroring instead of raising.
    """
    n, c, in_h, in_w = images.shape
    device = images.device
    rows = top[:, None] + torch.arange(size[0], device=device) - padding[2]  # (N, h) source rows
    cols = left[:, None] + torch.arange(size[1], device=device) - padding[0]
    source = _pad_index(rows, in_h, padding_mode)[:, :, None] * in_w + _pad_index(cols, in_w, padding_mode)[:, None, :]
    out = images.flatten(2).gather(2, source.view(n, 1, -1).expand(n, c, -1)).view(n, c, *size)
    if padding_mode != "constant":
        return out
    inside = ((rows >= 0) & (rows < in_h))[:, None, :, None] & ((cols >= 0) & (cols < in_w))[:, None, None, :]
    fill = _const(tuple(fill) if isinstance(fill, Sequence) else (fill,), device, images.dtype).view(1, -1, 1, 1)
    return torch.where(inside, out, fill)


class RandomCrop:
    """torchvision.transforms.v2.RandomCrop, per sample. Exact in distribution and, given offsets, in value.

    ``fill`` is used as given, like torchvision on float tensors: a fill meant for uint8/PIL images (e.g. 128)
    must be divided by 255 here. A dict ``fill`` (per tv_tensor type) is not supported.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float | Sequence[float] = 0,
        padding_mode: str = "constant",
    ) -> None:
        if isinstance(fill, dict):
            raise TypeError("RandomCrop: the gpu backend takes a number or a per-channel sequence as fill, not a dict")
        tv = T.RandomCrop(size, padding=padding, pad_if_needed=pad_if_needed, fill=fill, padding_mode=padding_mode)
        self.size = tuple(tv.size)
        self.padding = tuple(tv.padding) if tv.padding is not None else (0, 0, 0, 0)  # left, right, top, bottom
        self.pad_if_needed, self.padding_mode = pad_if_needed, padding_mode
        self.fill = [float(v) for v in fill] if isinstance(fill, Sequence) else float(fill)

    def _padding_for(self, height: int, width: int) -> tuple[int, int, int, int]:
        left, right, top, bottom = self.padding
        if self.pad_if_needed:
            # torchvision pads both sides by the whole shortfall, so the crop offset stays random.
            dh = max(self.size[0] - (height + top + bottom), 0)
            dw = max(self.size[1] - (width + left + right), 0)
            left, right, top, bottom = left + dw, right + dw, top + dh, bottom + dh
        if height + top + bottom < self.size[0] or width + left + right < self.size[1]:
            raise ValueError(
                f"Required crop size {self.size} is larger than padded input image size "
                f"{(height + top + bottom, width + left + right)}."
            )
        return left, right, top, bottom

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = images.shape
        padding = self._padding_for(height, width)
        top = _randint(height + padding[2] + padding[3] - self.size[0] + 1, generator, (n,))
        left = _randint(width + padding[0] + padding[1] - self.size[1] + 1, generator, (n,))
        return crop_padded(images, top, left, self.size, padding, self.fill, self.padding_mode)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding}, padding_mode={self.padding_mode!r})"


class RandomErasing:
    """torchvision.transforms.v2.RandomErasing, per sample.

    Exact in distribution: ten candidate boxes per sample, the first that fits (h < H and w < W) is erased;
    if none fits nothing is, as in torchvision. ``value`` is a number, a per-channel sequence or "random"
    (standard normal noise), used as given like torchvision on float tensors. ``inplace`` is accepted for
    signature compatibility; the input is never modified.
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | Sequence[float] | str = 0.0,
        inplace: bool = False,
    ) -> None:
        tv = T.RandomErasing(p=p, scale=scale, ratio=ratio, value=value)
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), tv.value  # value None: noise

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, height, width = images.shape
        if self.value is not None and len(self.value) not in (1, c):
            raise ValueError(f"If value is a sequence, it should have either a single value or {c} (number of inpt channels)")
        h, w = _box_candidates(n, height, width, self.scale, self.ratio, generator)
        valid = (h < height) & (w < width)
        h, found = _first(h, valid)
        w, _ = _first(w, valid)
        top, left = _randint(height - h + 1, generator), _randint(width - w + 1, generator)
        erase = _span_mask(top, h, height)[:, None, :, None] & _span_mask(left, w, width)[:, None, None, :]
        erase &= _view(found & _bernoulli(n, self.p, generator))
        if self.value is None:
            value = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        else:
            value = _const(tuple(self.value), images.device, images.dtype).view(1, -1, 1, 1)
        return torch.where(erase, value, images)

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value})"


# --- colour ---------------------------------------------------------------------------------------------------


def _adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each sample's hue by shift[i] (in turns), as torchvision's RGB -> HSV -> RGB round trip.

    The same maths in closed form, so that it costs a few elementwise passes: the hue in sixths is
    sector + (difference of the other two channels) / (max - min) (Pillow's formula, torchvision's _rgb_to_hsv),
    and channel n of (R, G, B) = (5, 3, 1) comes back as max - (max - min) * clamp(min(k, 4 - k), 0, 1) with
    k = (n + hue) mod 6, which is torchvision's six-sector _hsv_to_rgb with v * s = max - min. Agrees with
    torchvision to float rounding (~1e-6); grey pixels (max = min) stay unchanged.
    """
    r, g, b = images.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    spread = maxc - torch.minimum(torch.minimum(r, g), b)
    red_max, green_max = maxc == r, maxc == g  # ties resolved in torchvision's order: red, then green
    difference = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    sector = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0)).to(images.dtype)
    hue = sector + difference / torch.where(spread == 0, 1.0, spread) + 6 * shift.view(-1, 1, 1)
    k = (_const((5.0, 3.0, 1.0), images.device, images.dtype).view(1, 3, 1, 1) + hue.unsqueeze(1)).remainder_(6)
    return maxc.unsqueeze(1) - spread.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


# Indices of the blend-type adjustments; hue is handled on its own (it is not a blend).
_BRIGHTNESS, _CONTRAST, _SATURATION = 0, 1, 2


def _blend(images: torch.Tensor, op: torch.Tensor, factor: torch.Tensor, needs_gray: bool) -> torch.Tensor:
    """One colour adjustment per sample: op[i] in (brightness, contrast, saturation) with factor[i].

    All three are torchvision's ``_blend(x, other, f) = clamp(f * x + (1 - f) * other)`` with other = 0, the mean
    luma, or the luma image; written other + f * (x - other), which is exactly f * x for brightness and returns
    x exactly for f = 1, which is how a sample skips a slot.
    """
    op, factor = _view(op), _view(factor).to(images.dtype)
    other = torch.zeros((), dtype=images.dtype, device=images.device)
    if needs_gray:
        gray = _gray(images)
        other = torch.where(op == _SATURATION, gray, torch.where(op == _CONTRAST, gray.mean((1, 2, 3), keepdim=True), 0.0))
    return torch.addcmul(other, images - other, factor).clamp_(0, 1)


class ColorJitter:
    """torchvision.transforms.v2.ColorJitter, per sample, including a random order of the four adjustments
    drawn independently for every sample (torchvision draws one per call, i.e. per image).

    Each argument is parsed by torchvision (a number v means [max(0, 1 - v), 1 + v], hue [-v, v]; a pair is
    the range; 0 or None is off). Vectorised order: a sample's enabled blend adjustments are ranked by argsort of
    uniforms and hue gets a uniform slot among them, which is the law of torchvision's randperm(4); we run the
    blend slots before hue, hue once for the whole batch, then the slots after it, each sample skipping the
    slots it does not use (factor 1). Grayscale (C=1) images: saturation and hue are no-ops, as in torchvision.
    Float maths as torchvision's tensor path, to float rounding (hue: ~1e-6, see _adjust_hue).
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0) -> None:
        tv = T.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        self.brightness, self.contrast, self.saturation, self.hue = tv.brightness, tv.contrast, tv.saturation, tv.hue

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = images.shape[:2]
        ranges = [self.brightness, self.contrast, self.saturation if c == 3 else None]
        enabled = [i for i, r in enumerate(ranges) if r is not None]
        hue = self.hue if c == 3 else None
        factors = torch.ones(n, 3, dtype=torch.float64, device=images.device)
        for i in enabled:
            factors[:, i] = _uniform(n, *ranges[i], generator)
        ops = _const(tuple(enabled), images.device, torch.long)[_rand((n, len(enabled)), generator).argsort(dim=1)]
        chosen = factors.gather(1, ops)  # (N, m): factor of the op in each slot
        needs_gray = _CONTRAST in enabled or _SATURATION in enabled
        if hue is None:
            for slot in range(len(enabled)):
                images = _blend(images, ops[:, slot], chosen[:, slot], needs_gray)
            return images
        hue_slot = _randint(len(enabled) + 1, generator, (n,))
        for slot in range(len(enabled)):
            images = _blend(images, ops[:, slot], torch.where(slot < hue_slot, chosen[:, slot], 1.0), needs_gray)
        images = _adjust_hue(images, _uniform(n, *hue, generator).to(images.dtype))
        for slot in range(len(enabled)):
            images = _blend(images, ops[:, slot], torch.where(slot >= hue_slot, chosen[:, slot], 1.0), needs_gray)
        return images

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue})"
        )


# --- batch-level ops: images and labels -----------------------------------------------------------------------


def _log_gamma(shape: float, n: int, generator: torch.Generator, tries: int = 16) -> torch.Tensor:
    """log of n Gamma(shape, 1) samples from ``generator`` (Marsaglia-Tsang, vectorised).

    torch's own gamma sampler takes no generator. Each sample draws ``tries`` candidates and keeps the first
    accepted; the acceptance rate is >= 0.95, so all 16 are rejected with probability < 1e-20 (then the last
    candidate is kept). shape < 1 uses Gamma(shape + 1) * U^(1/shape), in logs so that it cannot underflow.
    """
    boost = shape < 1
    d = shape + boost - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn((n, tries), generator=generator, device=generator.device, dtype=torch.float64)
    v = (1 + c * x) ** 3
    u = _rand((n, tries), generator)
    accept = (v > 0) & (u.log() < 0.5 * x * x + d - d * v + d * v.log())
    accept[:, -1] = True
    log_g, _ = _first(math.log(d) + v.clamp(min=1e-300).log(), accept)
    if boost:
        log_g = log_g + _rand(n, generator).log() / shape
    return log_g


def sample_beta(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples of Beta(alpha, alpha) (float64, on the generator's device) as X / (X + Y), X, Y ~ Gamma(alpha)."""
    return torch.sigmoid(_log_gamma(alpha, n, generator) - _log_gamma(alpha, n, generator))


class _MixBase:
    """Shared by MixUp and CutMix. ``labels_getter`` is accepted for signature compatibility and ignored: the labels
    are the second argument. Labels may also be soft (N, num_classes) targets, as in torchvision."""

    def __init__(self, *, alpha: float = 1.0, num_classes: int | None = None, labels_getter="default") -> None:
        if alpha <= 0:
            raise ValueError(f"{type(self).__name__}: alpha must be positive, got {alpha}")
        self.alpha, self.num_classes = float(alpha), num_classes

    def _targets(self, labels: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """torchvision's _mixup_label: one-hot (or given soft) targets mixed with the batch rolled by one."""
        if labels.ndim == 1:
            if self.num_classes is None:
                raise ValueError("num_classes must be passed if the labels are index-based (1D)")
            # scatter, not F.one_hot: one_hot checks the label range on the host.
            onehot = torch.zeros(labels.shape[0], self.num_classes, device=labels.device)
            labels = onehot.scatter_(1, labels[:, None], 1.0)
        labels = labels.float()
        lam = lam.to(labels.dtype)
        return labels.roll(1, 0) * (1.0 - lam) + labels * lam

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, num_classes={self.num_classes})"


class MixUp(_MixBase):
    """torchvision.transforms.v2.MixUp: one lambda ~ Beta(alpha, alpha) per batch, partner = batch rolled by 1.

    ``op(images, labels, generator) -> (images, soft_targets)``; lambda stays on the device (torchvision
    reads it back as a Python float) and comes from ``sample_beta`` instead of torch.distributions.Beta, which
    takes no generator: same law, different stream. ``apply`` takes a given lambda (a 0-d tensor).
    """

    def __call__(self, images, labels, generator):
        return self.apply(images, labels, sample_beta(self.alpha, 1, generator)[0])

    def apply(self, images, labels, lam):
        lam_images = lam.to(images.dtype)
        return images.roll(1, 0) * (1.0 - lam_images) + images * lam_images, self._targets(labels, lam)


class CutMix(_MixBase):
    """torchvision.transforms.v2.CutMix: one lambda ~ Beta(alpha, alpha) and one box per batch, pasted from the
    batch rolled by 1; the targets use lambda corrected to the box's actual area, as torchvision does.
    The box centre is uniform over pixels as in torchvision; ``apply`` takes a given lambda and centre.
    """

    def __call__(self, images, labels, generator):
        lam = sample_beta(self.alpha, 1, generator)[0]
        height, width = images.shape[-2:]
        centre_x, centre_y = _randint(width, generator), _randint(height, generator)
        return self.apply(images, labels, lam, centre_x, centre_y)

    def apply(self, images, labels, lam, centre_x, centre_y):
        height, width = images.shape[-2:]
        r = 0.5 * torch.sqrt(1.0 - lam.to(torch.float64))
        half_w, half_h = (r * width).floor().long(), (r * height).floor().long()  # int() of a non-negative
        x1, x2 = (centre_x - half_w).clamp(min=0), (centre_x + half_w).clamp(max=width)
        y1, y2 = (centre_y - half_h).clamp(min=0), (centre_y + half_h).clamp(max=height)
        rows = torch.arange(height, device=images.device)
        cols = torch.arange(width, device=images.device)
        box = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
        lam_adjusted = 1.0 - ((x2 - x1) * (y2 - y1)).to(torch.float64) / (width * height)
        return torch.where(box, images.roll(1, 0), images), self._targets(labels, lam_adjusted)


class MixUpCutMix:
    """MixUp or CutMix, one of them per batch: CutMix with probability switch_prob, else MixUp, as DeiT trains (timm's
    Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5); torchvision's recipes: RandomChoice([MixUp, CutMix])).
    augrun's own op, not torchvision's: torchvision's RandomChoice takes transforms, which a config cannot name."""

    def __init__(self, *, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 num_classes: int | None = None) -> None:
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"MixUpCutMix: switch_prob must be a probability in [0, 1], got {switch_prob}")
        self.mixup = MixUp(alpha=mixup_alpha, num_classes=num_classes)
        self.cutmix = CutMix(alpha=cutmix_alpha, num_classes=num_classes)
        self.switch_prob = float(switch_prob)

    def __call__(self, images, labels, generator):
        # one draw per batch, from the step's generator: the same choice on every rank and on a resume
        use_cutmix = torch.rand((), generator=generator, device=generator.device) < self.switch_prob
        mixed = self.mixup(images, labels, generator)
        cut = self.cutmix(images, labels, generator)
        return torch.where(use_cutmix, cut[0], mixed[0]), torch.where(use_cutmix, cut[1], mixed[1])

    def __repr__(self) -> str:
        return f"MixUpCutMix(mixup={self.mixup}, cutmix={self.cutmix}, switch_prob={self.switch_prob})"


class GpuPipeline:
    """Applies per-image ops in order: ``GpuPipeline(ops)(images, generator) -> images``."""

    def __init__(self, ops: list) -> None:
        self.ops = list(ops)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            images = op(images, generator)
        return images

    def __len__(self) -> int:
        return len(self.ops)

    def __repr__(self) -> str:
        return "GpuPipeline([" + ", ".join(map(repr, self.ops)) + "])"


# Op name -> the per-image class that runs it batched: what the gpu backend's pipeline is made of (augment.gpu_pipeline
# builds it from a config's specs); an op missing here is one the gpu backend cannot run (ops.resolve_backend).
GPU_OPS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        RandomHorizontalFlip,
        RandomVerticalFlip,
        RandomResizedCrop,
        ColorJitter,
        RandomCrop,
        Normalize,
        RandomErasing,
        RandomGrayscale,
    )
}
# Op name -> the class of a batch op (aug.batch, ops.BATCH_NAMES): these mix labels too, and run on the training device
# for both backends, so they are not part of the gpu backend's pipeline.
BATCH_OP_CLASSES: dict[str, type] = {"MixUp": MixUp, "CutMix": CutMix, "MixUpCutMix": MixUpCutMix}
