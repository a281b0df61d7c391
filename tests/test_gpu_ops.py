"""The gpu backend's batched ops against torchvision.transforms.v2 applied per image.

Distribution tests compare our per-sample parameters with torchvision's, recovered the same way from both
outputs, by two-sample tests whose tolerance comes from the sample sizes at ALPHA: a correct implementation
fails one of them with probability ALPHA per comparison. All generators are seeded, so the outcome is fixed.
"""

from __future__ import annotations

import colorsys
import inspect
import itertools
import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F

from augrun.augment import gpu, ops
from augrun.augment.pixels import to_float

ALPHA = 1e-3
# Two-sided standard-normal quantile for ALPHA: P(|Z| > Z_CRIT) = 1e-3.
Z_CRIT = 3.2905


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov D = sup |F_a - F_b|, evaluated at every jump (handles ties)."""
    a, b = a.double().flatten().sort().values, b.double().flatten().sort().values
    points = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, points, right=True) / len(a)
    cdf_b = torch.searchsorted(b, points, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def ks_critical(n: int, m: int, alpha: float = ALPHA) -> float:
    """Asymptotic critical D at level alpha: c(alpha) * sqrt((n + m) / (n m)), c = sqrt(-ln(alpha / 2) / 2).
    Conservative for discrete data (integer crop sizes), so it never makes the test stricter than alpha."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def assert_same_distribution(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    d, crit = ks_statistic(ours, reference), ks_critical(ours.numel(), reference.numel())
    assert d <= crit, f"{what}: KS D={d:.4f} > critical {crit:.4f} (alpha={ALPHA}, n={ours.numel()}, m={reference.numel()})"


def assert_rate(count: int, n: int, p: float, what: str, z: float = Z_CRIT) -> None:
    """Binomial count against probability p: normal CI of half-width z * sqrt(p (1 - p) / n)."""
    tol = z * math.sqrt(p * (1 - p) / n)
    assert abs(count / n - p) <= tol, f"{what}: rate {count / n:.4f} vs p={p} (tolerance {tol:.4f} from n={n})"


def assert_same_rate(k1: int, n1: int, k2: int, n2: int, what: str) -> None:
    """Two-proportion z test with the pooled rate."""
    pooled = (k1 + k2) / (n1 + n2)
    tol = Z_CRIT * math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    assert abs(k1 / n1 - k2 / n2) <= tol, f"{what}: {k1 / n1:.4f} vs torchvision {k2 / n2:.4f} (tolerance {tol:.4f})"


def torchvision_per_image(op, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    # One thread: on tiny images torch's intra-op thread start-up costs several times the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        return torch.stack([op(image) for image in images])
    finally:
        torch.set_num_threads(threads)


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """(3, H, W): channel 0 = (x + 0.5) / W, channel 1 = (y + 0.5) / H; both are linear, so bilinear resampling
    keeps them linear and an output pixel tells where in the input it was sampled."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([(x + 0.5) / width, (y + 0.5) / height, torch.zeros(height, width)])


def batch(image: torch.Tensor, n: int) -> torch.Tensor:
    return image.expand(n, *image.shape).contiguous()


# --- every op: shapes, dtypes, range, independence, determinism ---------------------------------------------

RANDOM_OPS = {
    "hflip": lambda: gpu.RandomHorizontalFlip(),
    "vflip": lambda: gpu.RandomVerticalFlip(),
    "rrc": lambda: gpu.RandomResizedCrop(size=12, scale=(0.1, 1.0), ratio=(0.5, 2.0)),
    "rrc_hw": lambda: gpu.RandomResizedCrop(size=[10, 14]),
    "jitter": lambda: gpu.ColorJitter(0.5, 0.5, 0.5, 0.5),
    "jitter_bc": lambda: gpu.ColorJitter(brightness=0.5, contrast=0.5),
    "crop": lambda: gpu.RandomCrop(size=16, padding=4),
    "crop_reflect": lambda: gpu.RandomCrop(size=[12, 14], padding=[1, 2, 3, 4], padding_mode="reflect"),
    "erasing": lambda: gpu.RandomErasing(p=0.5),
    "grayscale": lambda: gpu.RandomGrayscale(p=0.5),
}
OUT_SIZE = {"rrc": (12, 12), "rrc_hw": (10, 14), "crop": (16, 16), "crop_reflect": (12, 14)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", [*RANDOM_OPS, "normalize"])
def test_shape_dtype_range_and_input_untouched(name, channels, dtype):
    images = torch.rand(32, channels, 16, 16, generator=gen(1), dtype=dtype)
    before = images.clone()
    op = gpu.Normalize([0.5] * channels, [0.25] * channels) if name == "normalize" else RANDOM_OPS[name]()
    out = op(images, gen())
    assert torch.equal(images, before), "the input was modified"
    assert out.shape == (32, channels, *OUT_SIZE.get(name, (16, 16)))
    assert out.dtype == dtype and out.device == images.device
    if name != "normalize":
        assert out.min() >= 0 and out.max() <= 1
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_seeded_determinism(name):
    images = torch.rand(16, 3, 16, 16, generator=gen(1))
    op = RANDOM_OPS[name]()
    assert torch.equal(op(images, gen(7)), op(images, gen(7))), "same seed, different output"
    assert not torch.equal(op(images, gen(7)), op(images, gen(8))), "different seeds, same output"


@pytest.mark.parametrize("name", RANDOM_OPS)
def test_each_sample_gets_its_own_parameters(name):
    # 64 copies of one image: one draw for the whole batch would give 64 equal outputs. With p = 0.5 ops,
    # all-equal by chance has probability 2 * 0.5**64.
    images = batch(torch.rand(3, 16, 16, generator=gen(2)), 64)
    out = RANDOM_OPS[name]()(images, gen(3))
    assert not (out == out[:1]).all(), "every sample got the same parameters"


def test_registries_and_signatures_follow_torchvision():
    assert set(gpu.GPU_OPS) == {
        "RandomHorizontalFlip", "RandomVerticalFlip", "RandomResizedCrop", "ColorJitter", "RandomCrop",
        "Normalize", "RandomErasing", "RandomGrayscale",
    }
    assert set(gpu.BATCH_OP_CLASSES) == {"MixUp", "CutMix", "MixUpCutMix"}
    own = set(ops.OWN_OPS)  # augrun's own ops have no torchvision class to follow
    for name, cls in {**gpu.GPU_OPS, **gpu.BATCH_OP_CLASSES}.items():
        if name in own:
            continue
        ours = inspect.signature(cls).parameters
        theirs = inspect.signature(getattr(T, name)).parameters
        assert list(ours) == list(theirs), name
        for arg, parameter in theirs.items():
            # ColorJitter's documented default is 0 where torchvision's is None: both mean off.
            if parameter.default is not None:
                assert same_setting(ours[arg].default, parameter.default), f"{name}.{arg}"


def same_setting(ours, theirs) -> bool:
    """Equal defaults, an interpolation given as "bilinear" or as InterpolationMode.BILINEAR counting as one: torchvision
    0.26 writes its default as the Enum, 0.29 as the string, and only one of them compares equal to the other."""
    def as_mode(value):
        return T.InterpolationMode(value) if isinstance(value, str) else value
    if isinstance(ours, T.InterpolationMode) or isinstance(theirs, T.InterpolationMode):
        return as_mode(ours) == as_mode(theirs)
    return ours == theirs


def books_to_tensor_of_every_value() -> tuple[torch.Tensor, torch.Tensor]:
    """Every uint8 value as a 1x3x16x16 batch, and the book's ToTensor (x / 255) of it."""
    import torchvision.transforms as V1
    from PIL import Image
    every_value = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    return every_value, V1.ToTensor()(Image.fromarray(every_value[0].permute(1, 2, 0).numpy()))


def test_to_float_matches_the_cpu_backend_conversion():
    every_value, book = books_to_tensor_of_every_value()
    assert torch.equal(to_float(every_value)[0], book)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_float_on_cuda_matches_the_cpu_backend_conversion():
    every_value, book = books_to_tensor_of_every_value()
    assert torch.equal(to_float(every_value.cuda())[0].cpu(), book)


def test_pipeline_applies_ops_in_order():
    images = torch.rand(8, 3, 8, 8, generator=gen())
    pipeline = gpu.GpuPipeline([gpu.RandomHorizontalFlip(p=1.0), gpu.Normalize([0.5] * 3, [0.5] * 3)])
    assert torch.equal(pipeline(images, gen()), (images.flip(-1) - 0.5) / 0.5)
    jitter_then_crop = gpu.GpuPipeline([gpu.ColorJitter(0.5), gpu.RandomCrop(6)])
    g1, g2 = gen(4), gen(4)
    assert torch.equal(jitter_then_crop(images, g1), gpu.RandomCrop(6)(gpu.ColorJitter(0.5)(images, g2), g2))


# --- flips and grayscale --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, dim", [(gpu.RandomHorizontalFlip, -1), (gpu.RandomVerticalFlip, -2)])
def test_flip_p0_p1_exact(cls, dim):
    images = torch.rand(8, 3, 5, 7, generator=gen())
    assert torch.equal(cls(p=0.0)(images, gen()), images)
    assert torch.equal(cls(p=1.0)(images, gen()), torch.flip(images, [dim]))


@pytest.mark.parametrize("p", [0.5, 0.3])
@pytest.mark.parametrize("cls, dim", [(gpu.RandomHorizontalFlip, -1), (gpu.RandomVerticalFlip, -2)])
def test_flip_rate_matches_p_and_torchvision(cls, dim, p):
    image = torch.rand(3, 5, 7, generator=gen())
    n = 4000
    flipped = (cls(p=p)(batch(image, n), gen(5)) == image.flip(dim)).flatten(1).all(1).sum().item()
    assert_rate(flipped, n, p, f"{cls.__name__} rate")
    m = 2000
    reference = torchvision_per_image(getattr(T, cls.__name__)(p=p), batch(image, m))
    tv_flipped = (reference == image.flip(dim)).flatten(1).all(1).sum().item()
    assert_same_rate(flipped, n, tv_flipped, m, cls.__name__)


def test_grayscale_rate_and_values():
    image = torch.rand(3, 6, 6, generator=gen())
    n = 4000
    out = gpu.RandomGrayscale(p=0.1)(batch(image, n), gen(6))
    gray = (out == out[:, :1]).flatten(1).all(1)
    assert_rate(gray.sum().item(), n, 0.1, "RandomGrayscale rate")
    expected = F.rgb_to_grayscale(image, num_output_channels=3)
    assert torch.allclose(out[gray], expected.expand(int(gray.sum()), 3, 6, 6), atol=1e-6)
    assert torch.equal(out[~gray], batch(image, int((~gray).sum())))


def test_grayscale_one_channel_is_noop():
    images = torch.rand(8, 1, 6, 6, generator=gen())
    assert torch.equal(gpu.RandomGrayscale(p=1.0)(images, gen()), images)


# --- Normalize ------------------------------------------------------------------------------------------------


def test_normalize_equals_torchvision():
    images = torch.rand(8, 3, 6, 6, generator=gen())
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    assert torch.equal(gpu.Normalize(mean, std)(images, gen()), T.Normalize(mean, std)(images))
    assert torch.equal(gpu.Normalize(mean, std)(images, None), T.Normalize(mean, std)(images))


# --- RandomResizedCrop ----------------------------------------------------------------------------------------

RRC_CASES = [
    # (image h, w, kwargs): torchvision's default; the book's flip_color_crop; an image and ratio range for which
    # most candidates do not fit, so the 10-try loop and the central-crop fallback both matter.
    (32, 32, {}),
    (32, 32, {"scale": (0.1, 1.0), "ratio": (0.5, 2.0)}),
    (24, 40, {"scale": (0.6, 1.0), "ratio": (0.25, 4.0)}),
]


@pytest.mark.parametrize("height, width, kwargs", RRC_CASES)
def test_rrc_box_distribution_matches_torchvision(height, width, kwargs):
    n, m = 4000, 2000
    top, left, h, w = gpu.RandomResizedCrop(size=8, **kwargs).get_params(n, height, width, gen(8))
    tv = T.RandomResizedCrop(size=8, **kwargs)
    torch.manual_seed(0)
    ref = [tv.make_params([torch.empty(1, height, width)]) for _ in range(m)]
    ref = {key: torch.tensor([r[key] for r in ref]) for key in ("top", "left", "height", "width")}
    assert ((top >= 0) & (top + h <= height) & (left >= 0) & (left + w <= width)).all()
    for what, ours, theirs in [
        ("height", h, ref["height"]), ("width", w, ref["width"]), ("top", top, ref["top"]), ("left", left, ref["left"]),
        ("area", h * w, ref["height"] * ref["width"]), ("aspect", w / h, ref["width"] / ref["height"]),
    ]:
        assert_same_distribution(ours, theirs, f"RandomResizedCrop {what}")


def _recover_box(out: torch.Tensor, height: int, width: int) -> dict[str, torch.Tensor]:
    """Crop size and centre from a coordinate image resized without antialiasing. The two central output columns
    sample the crop at centre -/+ w / (2 ow), inside the crop for any crop of 2+ pixels, where bilinear
    interpolation of a linear ramp is exact: their x difference is w / ow. Rounding to the integer (half-integer
    for the centre) removes float noise, which would otherwise split the atoms of these discrete distributions."""
    oh, ow = out.shape[-2:]
    x, y = out[:, 0] * width - 0.5, out[:, 1] * height - 0.5
    w = ((x[:, oh // 2, ow // 2] - x[:, oh // 2, ow // 2 - 1]) * ow).round()
    h = ((y[:, oh // 2, ow // 2] - y[:, oh // 2 - 1, ow // 2]) * oh).round()
    return {"area": w * h / (height * width), "aspect": w / h,
            "centre_x": (x[:, oh // 2, ow // 2] + x[:, oh // 2, ow // 2 - 1]).round() / 2,
            "centre_y": (y[:, oh // 2, ow // 2] + y[:, oh // 2 - 1, ow // 2]).round() / 2}


@pytest.mark.parametrize("height, width, kwargs", RRC_CASES[1:])
def test_rrc_area_and_aspect_recovered_from_coordinate_image(height, width, kwargs):
    image = coordinate_image(height, width)
    kwargs = {**kwargs, "antialias": False}  # antialiasing is checked by the exact test below
    n, m = 3000, 1500
    ours = _recover_box(gpu.RandomResizedCrop(size=16, **kwargs)(batch(image, n), gen(9)), height, width)
    theirs = _recover_box(torchvision_per_image(T.RandomResizedCrop(size=16, **kwargs), batch(image, m)), height, width)
    lo, hi = kwargs["scale"]
    assert (ours["area"] >= lo * 0.8).all() and (ours["area"] <= hi).all()
    for key in ours:
        assert_same_distribution(ours[key], theirs[key], f"RandomResizedCrop {key}")


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("box, size", [
    ((2, 3, 10, 12), (6, 5)),  # downscale
    ((0, 0, 16, 20), (32, 40)),  # upscale the whole image
    ((1, 4, 7, 9), (12, 7)),  # up in one axis, down in the other
    ((5, 0, 11, 20), (11, 20)),  # same size: a plain crop
])
def test_resized_crop_equals_torchvision_given_the_box(box, size, antialias):
    images = torch.rand(4, 3, 16, 20, generator=gen())
    top, left, h, w = (torch.full((4,), v) for v in box)
    ours = gpu.resized_crop(images, top, left, h, w, size, antialias)
    reference = F.resized_crop(images, *box, list(size), antialias=antialias)
    assert torch.allclose(ours, reference, atol=2e-6)


@pytest.mark.parametrize("ratio", [(2.0, 3.0), (0.2, 0.5), (1.0, 2.0)])
def test_rrc_central_fallback_equals_torchvision(ratio):
    # An area above the image never fits, so every sample takes torchvision's deterministic central crop.
    images = torch.rand(6, 3, 16, 24, generator=gen())
    ours = gpu.RandomResizedCrop(size=[8, 10], scale=(2.0, 3.0), ratio=ratio)(images, gen())
    reference = T.RandomResizedCrop(size=[8, 10], scale=(2.0, 3.0), ratio=ratio)(images)
    assert torch.allclose(ours, reference, atol=2e-6)


def test_rrc_size_forms_and_interpolation():
    images = torch.rand(2, 3, 16, 16, generator=gen())
    assert gpu.RandomResizedCrop(size=8)(images, gen()).shape[-2:] == (8, 8)
    assert gpu.RandomResizedCrop(size=[8])(images, gen()).shape[-2:] == (8, 8)
    assert gpu.RandomResizedCrop(size=[6, 9], interpolation=T.InterpolationMode.BILINEAR)(images, gen()).shape[-2:] == (6, 9)
    with pytest.raises(ValueError, match="bilinear"):
        gpu.RandomResizedCrop(size=8, interpolation=T.InterpolationMode.NEAREST)


# --- RandomCrop -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_mode, fill", [("constant", 0), ("constant", (0.1, 0.5, 0.9)), ("edge", 0),
                                                ("reflect", 0), ("symmetric", 0)])
@pytest.mark.parametrize("padding", [4, [2, 3], [1, 2, 3, 4]])
def test_random_crop_equals_torchvision_at_given_offsets(padding, padding_mode, fill):
    images = torch.rand(3, 3, 9, 11, generator=gen())
    tv = T.RandomCrop(size=[8, 10], padding=padding, fill=fill, padding_mode=padding_mode)
    ours = gpu.RandomCrop(size=[8, 10], padding=padding, fill=fill, padding_mode=padding_mode)
    torch.manual_seed(0)
    for _ in range(10):
        params = tv.make_params([images])
        left, top, right, bottom = params["padding"]
        offset = torch.full((3,), params["top"]), torch.full((3,), params["left"])
        out = gpu.crop_padded(images, *offset, ours.size, ours._padding_for(9, 11), ours.fill, padding_mode)
        assert (left, right, top, bottom) == ours._padding_for(9, 11)
        assert torch.equal(out, tv.transform(images, params))


def test_random_crop_pad_if_needed_equals_torchvision():
    images = torch.rand(2, 3, 20, 18, generator=gen())
    tv = T.RandomCrop(size=24, pad_if_needed=True, padding_mode="reflect")
    ours = gpu.RandomCrop(size=24, pad_if_needed=True, padding_mode="reflect")
    torch.manual_seed(0)
    for _ in range(10):
        params = tv.make_params([images])
        left, top, right, bottom = params["padding"]
        assert (left, right, top, bottom) == ours._padding_for(20, 18)
        offset = torch.full((2,), params["top"]), torch.full((2,), params["left"])
        out = gpu.crop_padded(images, *offset, ours.size, ours._padding_for(20, 18), 0.0, "reflect")
        assert torch.equal(out, tv.transform(images, params))
    assert ours(images, gen()).shape == (2, 3, 24, 24)
    with pytest.raises(ValueError, match="larger"):
        gpu.RandomCrop(size=24)(images, gen())


def test_random_crop_offsets_match_torchvision():
    # Output pixel (16, 16) of a 32 crop of a 32 image padded by 4 reads input (top + 12, left + 12), always
    # inside the image, so the coordinate image gives the offsets back.
    image = coordinate_image(32, 32)
    n, m = 4000, 2000

    def offsets(out):
        return ((out[:, 1, 16, 16] * 32 - 0.5).round() - 12, (out[:, 0, 16, 16] * 32 - 0.5).round() - 12)

    top, left = offsets(gpu.RandomCrop(32, padding=4)(batch(image, n), gen(10)))
    tv_top, tv_left = offsets(torchvision_per_image(T.RandomCrop(32, padding=4), batch(image, m)))
    assert set(top.tolist()) == set(left.tolist()) == set(range(9))
    assert_same_distribution(top, tv_top, "RandomCrop top")
    assert_same_distribution(left, tv_left, "RandomCrop left")


# --- ColorJitter ----------------------------------------------------------------------------------------------


def test_brightness_only_is_clamped_scaling():
    images = torch.rand(16, 3, 6, 6, generator=gen())
    assert torch.equal(gpu.ColorJitter(brightness=(1.3, 1.3))(images, gen()), (images * 1.3).clamp(0, 1))
    # With a random factor: recover each sample's factor from a pixel set to 0.5, then the whole image must be
    # exactly clamp(x * f).
    images[:, :, 0, 0] = 0.5
    out = gpu.ColorJitter(brightness=0.5)(images, gen())
    factor = out[:, 0, 0, 0] / 0.5
    assert torch.allclose(out, (images * factor.view(-1, 1, 1, 1)).clamp(0, 1), atol=1e-6)
    assert (factor >= 0.5 - 1e-6).all() and (factor <= 1.5 + 1e-6).all()


ORANGE = (0.6, 0.4, 0.2)


def _constant(colour, size=4):
    return torch.tensor(colour).view(3, 1, 1).expand(3, size, size).clone()


def _hue(out):
    return torch.tensor([colorsys.rgb_to_hsv(*pixel.tolist())[0] for pixel in out[:, :, 0, 0]])


# For each adjustment: an image on which it is linear and unclamped over the whole range, and how to read
# the factor back.
RECOVER = {
    "brightness": (_constant((0.4, 0.4, 0.4)), lambda out: out[:, 0, 0, 0] / 0.4),
    "contrast": (torch.cat([_constant((0.3,) * 3)[:, :2], _constant((0.7,) * 3)[:, 2:]], 1),
                 lambda out: (out[:, 0, -1, 0] - out[:, 0, 0, 0]) / 0.4),
    "saturation": (_constant(ORANGE), lambda out: (out[:, 0, 0, 0] - out[:, 2, 0, 0]) / (ORANGE[0] - ORANGE[2])),
    "hue": (_constant(ORANGE), lambda out: (_hue(out) - colorsys.rgb_to_hsv(*ORANGE)[0] + 0.5) % 1.0 - 0.5),
}


@pytest.mark.parametrize("arg, value, expected_range", [
    ("brightness", 0.5, (0.5, 1.5)), ("brightness", (0.8, 1.1), (0.8, 1.1)),
    ("contrast", 0.5, (0.5, 1.5)), ("contrast", 2.0, (0.0, 3.0)),
    ("saturation", 0.5, (0.5, 1.5)), ("saturation", (0.0, 0.4), (0.0, 0.4)),
    ("hue", 0.5, (-0.5, 0.5)), ("hue", (0.05, 0.2), (0.05, 0.2)),
])
def test_jitter_factor_distribution_matches_torchvision(arg, value, expected_range):
    image, recover = RECOVER[arg]
    if arg == "contrast" and value == 2.0:  # range [0, 3]: keep the two tones unclamped up to factor 3
        image = torch.cat([_constant((0.45,) * 3)[:, :2], _constant((0.55,) * 3)[:, 2:]], 1)
        recover = lambda out: (out[:, 0, -1, 0] - out[:, 0, 0, 0]) / 0.1  # noqa: E731
    n, m = 3000, 1500
    ours = recover(gpu.ColorJitter(**{arg: value})(batch(image, n), gen(11)))
    theirs = recover(torchvision_per_image(T.ColorJitter(**{arg: value}), batch(image, m)))
    assert ours.min() >= expected_range[0] - 1e-3 and ours.max() <= expected_range[1] + 1e-3
    assert_same_distribution(ours, theirs, f"ColorJitter {arg}={value}")


def _torchvision_orders(tv: T.ColorJitter, image: torch.Tensor, factors: dict) -> list[torch.Tensor]:
    """torchvision's output for each of the 24 orders, fixed factors."""
    return [tv.transform(image, dict(fn_idx=torch.tensor(order), **factors))
            for order in itertools.permutations(range(4))]


@pytest.mark.parametrize("kwargs, channels", [
    ({"brightness": (1.4, 1.4), "contrast": (0.5, 0.5), "saturation": (1.8, 1.8), "hue": (0.3, 0.3)}, 3),
    ({"brightness": (1.4, 1.4), "contrast": (0.5, 0.5), "saturation": (1.8, 1.8)}, 3),
    ({"brightness": (1.6, 1.6), "contrast": (0.4, 0.4), "hue": (0.2, 0.2)}, 3),
    ({"brightness": (1.6, 1.6), "contrast": (0.4, 0.4), "saturation": (1.8, 1.8), "hue": (0.3, 0.3)}, 1),
])
def test_jitter_order_is_random_per_sample_like_torchvision(kwargs, channels):
    # Fixed factors leave the order as the only randomness: each output must be one of torchvision's outputs
    # for the 24 orders, each with the share of orders that produce it.
    image = torch.rand(channels, 5, 5, generator=gen(12))
    tv = T.ColorJitter(**kwargs)
    factors = {f"{k}_factor": (kwargs[k][0] if k in kwargs else None)
               for k in ("brightness", "contrast", "saturation", "hue")}
    distinct: list[tuple[torch.Tensor, int]] = []
    for out in _torchvision_orders(tv, image, factors):
        match = next((i for i, (o, _) in enumerate(distinct) if torch.allclose(o, out, atol=1e-5)), None)
        if match is None:
            distinct.append((out, 1))
        else:
            distinct[match] = (distinct[match][0], distinct[match][1] + 1)
    n = 2400
    out = gpu.ColorJitter(**kwargs)(batch(image, n), gen(13))
    errors = torch.stack([(out - o).abs().flatten(1).amax(1) for o, _ in distinct], 1)  # (N, classes)
    assert (errors.min(1).values < 1e-5).all(), "an output matches no order of torchvision's"
    counts = torch.bincount(errors.argmin(1), minlength=len(distinct))
    assert (counts > 0).sum() >= 2, "one order for the whole batch"
    z = math.sqrt(2) * torch.erfinv(torch.tensor(1 - ALPHA / len(distinct))).item()  # Bonferroni over classes
    for (_, orders), count in zip(distinct, counts.tolist()):
        assert_rate(count, n, orders / 24, "share of an order", z=z)


def test_jitter_grayscale_saturation_and_hue_are_noops():
    images = torch.rand(8, 1, 6, 6, generator=gen())
    assert torch.equal(gpu.ColorJitter(saturation=0.9, hue=0.5)(images, gen()), images)


def test_full_jitter_output_statistics_match_torchvision():
    image = torch.rand(3, 8, 8, generator=gen(14))
    n, m = 3000, 1500
    ours = gpu.ColorJitter(0.5, 0.5, 0.5, 0.5)(batch(image, n), gen(15))
    theirs = torchvision_per_image(T.ColorJitter(0.5, 0.5, 0.5, 0.5), batch(image, m))
    for c in range(3):
        assert_same_distribution(ours[:, c].mean((1, 2)), theirs[:, c].mean((1, 2)), f"channel {c} mean")
        assert_same_distribution(ours[:, c].std((1, 2)), theirs[:, c].std((1, 2)), f"channel {c} std")


@pytest.mark.parametrize("levels", [None, 4])
def test_hue_formula_equals_torchvision(levels):
    # levels: a few grey levels per channel, so that channels tie (grey pixels, two equal maxima) often.
    images = torch.rand(16, 3, 6, 6, generator=gen())
    if levels:
        images = (images * levels).floor() / levels
    shifts = torch.linspace(-0.5, 0.5, 16)
    ours = gpu._adjust_hue(images, shifts)
    reference = torch.stack([F.adjust_hue(image, float(s)) for image, s in zip(images, shifts)])
    assert torch.allclose(ours, reference, atol=1e-5)


# --- RandomErasing --------------------------------------------------------------------------------------------


def _erased_box(out: torch.Tensor):
    erased = out[:, 0] == 0  # ones image, value 0
    return erased.sum((1, 2)).float(), erased.any(2).sum(1).float(), erased.any(1).sum(1).float()


@pytest.mark.parametrize("kwargs", [{}, {"p": 0.8, "scale": (0.1, 0.6), "ratio": (0.2, 5.0)}])
def test_erasing_box_distribution_matches_torchvision(kwargs):
    image = torch.ones(3, 16, 16)
    n, m = 4000, 2000
    area, h, w = _erased_box(gpu.RandomErasing(**kwargs)(batch(image, n), gen(16)))
    tv_area, tv_h, tv_w = _erased_box(torchvision_per_image(T.RandomErasing(**kwargs), batch(image, m)))
    assert_same_rate(int((area > 0).sum()), n, int((tv_area > 0).sum()), m, "erasing rate")
    assert_same_distribution(area / 256, tv_area / 256, "erased area fraction")
    assert_same_distribution(h, tv_h, "erased height")
    assert_same_distribution(w, tv_w, "erased width")
    assert (area == h * w).all(), "the erased region is not a rectangle"


def test_erasing_values():
    images = torch.ones(64, 3, 8, 8)
    out = gpu.RandomErasing(p=1.0, value=(0.1, 0.2, 0.3))(images, gen())
    erased = out[:, 0] != 1
    for c, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[:, c][erased], torch.tensor(v))
    noise = gpu.RandomErasing(p=1.0, value="random")(images, gen())
    assert noise.std() > 0.1
    with pytest.raises(ValueError):
        gpu.RandomErasing(value=(0.1, 0.2))(images, gen())


def test_erasing_that_never_fits_leaves_the_image_like_torchvision():
    images = torch.rand(8, 3, 8, 8, generator=gen())
    kwargs = {"p": 1.0, "scale": (0.99, 1.0), "ratio": (1.0, 1.0)}  # an 8x8 box is not < 8x8
    assert torch.equal(gpu.RandomErasing(**kwargs)(images, gen()), images)
    assert torch.equal(T.RandomErasing(**kwargs)(images), images)


# --- MixUp / CutMix -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_sampler_matches_torch_distributions(alpha):
    n = 20000
    ours = gpu.sample_beta(alpha, n, gen(17))
    torch.manual_seed(0)
    reference = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha)).sample((n,))
    assert ((ours >= 0) & (ours <= 1)).all()
    assert_same_distribution(ours, reference, f"Beta({alpha}, {alpha})")
    assert torch.equal(ours, gpu.sample_beta(alpha, n, gen(17)))


class _FixedLambda:
    """Stands in for torchvision's Beta distribution so that its MixUp/CutMix uses a given lambda."""

    def __init__(self, lam):
        self.lam = lam

    def sample(self, shape):
        return torch.tensor([self.lam])


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.75, 1.0])
def test_mixup_equals_torchvision_for_a_given_lambda(lam):
    images, labels = torch.rand(6, 3, 5, 5, generator=gen()), torch.tensor([0, 3, 1, 4, 4, 2])
    tv = T.MixUp(alpha=1.0, num_classes=5)
    tv._dist = _FixedLambda(lam)
    tv_images, tv_targets = tv(images, labels)
    ours_images, ours_targets = gpu.MixUp(alpha=1.0, num_classes=5).apply(images, labels, torch.tensor(lam))
    assert torch.allclose(ours_images, tv_images, atol=1e-6)
    assert torch.allclose(ours_targets, tv_targets, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.75, 0.999, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_equals_torchvision_for_a_given_lambda(lam, seed):
    images, labels = torch.rand(6, 3, 12, 10, generator=gen()), torch.tensor([0, 3, 1, 4, 4, 2])
    tv = T.CutMix(alpha=1.0, num_classes=5)
    tv._dist = _FixedLambda(lam)
    torch.manual_seed(seed)  # torchvision draws the box centre x then y from the global RNG
    centre_x, centre_y = torch.randint(10, size=(1,))[0], torch.randint(12, size=(1,))[0]
    torch.manual_seed(seed)
    tv_images, tv_targets = tv(images, labels)
    ours_images, ours_targets = gpu.CutMix(num_classes=5).apply(images, labels, torch.tensor(lam), centre_x, centre_y)
    assert torch.equal(ours_images, tv_images)
    assert torch.allclose(ours_targets, tv_targets, atol=1e-6)


def test_mixup_targets_and_partner():
    images, labels = torch.rand(8, 3, 5, 5, generator=gen()), torch.arange(8)
    out, targets = gpu.MixUp(alpha=0.4, num_classes=10)(images, labels, gen(18))
    assert targets.shape == (8, 10) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(8))
    lam = targets[0, 0]  # distinct labels: each row holds lam on its own class, 1 - lam on its partner's
    assert torch.allclose(targets[torch.arange(8), labels], lam.expand(8))
    assert torch.allclose(targets[torch.arange(8), labels.roll(1)], (1 - lam).expand(8))
    assert torch.allclose(out, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-6)
    assert not torch.equal(gpu.MixUp(num_classes=10)(images, labels, gen(1))[1],
                           gpu.MixUp(num_classes=10)(images, labels, gen(2))[1])


def test_cutmix_targets_and_partner():
    images, labels = torch.rand(8, 3, 16, 16, generator=gen()), torch.arange(8)
    for seed in range(5):
        out, targets = gpu.CutMix(alpha=1.0, num_classes=8)(images, labels, gen(seed))
        assert torch.allclose(targets.sum(1), torch.ones(8))
        from_partner = (out == images.roll(1, 0)).all(1) & (out != images).any(1)  # (N, H, W)
        assert ((out == images) | (out == images.roll(1, 0))).all()
        share = from_partner.float().mean((1, 2))  # pasted area, the same box for every sample
        assert torch.allclose(targets[torch.arange(8), labels.roll(1)], share, atol=1e-6)


def test_mix_ops_accept_soft_labels_and_check_arguments():
    images = torch.rand(4, 3, 5, 5, generator=gen())
    soft = torch.softmax(torch.rand(4, 3, generator=gen()), 1)
    _, targets = gpu.MixUp(alpha=1.0)(images, soft, gen())
    assert torch.allclose(targets.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="num_classes"):
        gpu.CutMix()(images, torch.arange(4), gen())
    with pytest.raises(ValueError, match="alpha"):
        gpu.MixUp(alpha=0.0, num_classes=3)


# --- CUDA: same ops on device tensors, without host synchronisation ------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ops_run_without_host_sync():
    device = torch.device("cuda")
    images = torch.rand(64, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (64,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    ops = [factory() for factory in RANDOM_OPS.values()] + [gpu.Normalize([0.5] * 3, [0.2] * 3)]
    mixers = [gpu.MixUp(num_classes=10), gpu.CutMix(num_classes=10)]

    def run_all():
        outs = [op(images, generator) for op in ops] + [m(images, labels, generator)[1] for m in mixers]
        return outs

    run_all()  # first call copies cached constants to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = run_all()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(out.device.type == "cuda" and torch.isfinite(out).all() for out in outs)
