"""Pictures of augmentation: read an image file, draw augmented copies of one image with either backend, render a grid
of images (the book's `apply` and `show_images`), and a training run's preview.png.

The picture has a fixed pixel size: the figure is (cols * scale, rows * scale) inches, saved at DPI without a tight
bounding box. Every draw is seeded; torch's global RNG is restored afterwards, so drawing changes nothing in a run.
Used by `augrun preview` and by training (which must not import the command).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from augrun.errors import ConfigError, first_line

if TYPE_CHECKING:
    import torch

    from augrun.augment.ops import OpSpec

DPI = 100  # pixels per inch of the saved picture: a cell of scale 1.5 inches is 150 pixels
RUN_PREVIEW_GRID = (2, 4, 1.5)  # rows, cols, scale of a training run's preview.png: the book's apply


def read_image(path: Path) -> torch.Tensor:
    """An image file as uint8 (C, H, W): RGB, or one channel for grayscale files; EXIF rotation applied."""
    import torch

    from augrun.data.decoding import ImageFileError, decode_image

    try:
        pixels = decode_image(path, channels=None)
    except ImageFileError as error:
        raise ConfigError("image", str(error)) from None
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def augmented_copies(image_uint8_chw: torch.Tensor, specs: list[OpSpec], backend: str, count: int,
                     seed: int) -> list[torch.Tensor]:
    """``count`` augmentations of one uint8 (C, H, W) image, as float (C, H', W') tensors in [0, 1].

    Seeded by (seed, "preview"), a purpose no training draw uses; torch's global RNG, which the cpu pipeline draws
    from, is restored afterwards, so a run that draws its preview keeps its own random stream.
    """
    import torch

    from augrun.seeding import derive_seed

    image = image_uint8_chw.detach().cpu()
    try:
        if backend == "gpu":
            from augrun.augment.gpu_pipeline import build_pipeline
            from augrun.augment.pixels import to_float
            pipeline = build_pipeline(specs)
            generator = torch.Generator().manual_seed(derive_seed(seed, "preview"))
            batch = pipeline(to_float(image.unsqueeze(0).repeat(count, 1, 1, 1)), generator)
            return list(batch.clamp(0, 1).unbind(0))
        from PIL import Image

        from augrun.augment.cpu import build_train_transform
        transform = build_train_transform(specs)  # no mean/std: the picture shows pixels, not model inputs
        pixels = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        copies = []
        with torch.random.fork_rng(devices=[]):
            for i in range(count):
                # per copy, as the training workers seed per image: copy i does not depend on the others
                torch.default_generator.manual_seed(derive_seed(seed, "preview", i))
                copies.append(transform(picture).clamp(0, 1))
        return copies
    except (ValueError, RuntimeError) as error:  # e.g. a crop larger than the (padded) image
        size = "x".join(map(str, image.shape[-2:]))
        raise ConfigError("aug.train", f"cannot apply the pipeline to the {size} image: {first_line(error)}") from None


def render_grid(images: list[torch.Tensor], path: Path, *, rows: int, cols: int, scale: float,
                titles: list[str] | None = None) -> Path:
    """Float (C, H, W) images in [0, 1] in a rows x cols grid, axes off (the book's show_images), written atomically.

    The picture is (cols * scale, rows * scale) inches at DPI, so its pixel size depends only on rows, cols and scale.
    Cells beyond ``images`` stay blank.
    """
    from matplotlib.figure import Figure  # a bare Figure on the Agg canvas: no pyplot, no display needed

    from augrun.report.curves import save_figure

    fig = Figure(figsize=(picture_inches(cols, scale), picture_inches(rows, scale)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        image = images[i].detach().float().cpu()
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        if titles:
            ax.set_title(titles[i], fontsize=8, pad=2)
    # fixed margins, not tight_layout or bbox_inches="tight", which would make the pixel size depend on the content
    top = 1 - 0.25 / (rows * scale) if titles else 0.98  # room for the first row's titles (a quarter inch)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.08, hspace=0.3 if titles else 0.08)
    save_figure(fig, path, dpi=DPI)
    return path


def picture_inches(cells: int, scale: float) -> float:
    """The picture's side in inches: round(cells * scale * DPI) pixels, whether matplotlib rounds inches * DPI (3.11)
    or truncates it (3.10, which makes 3 * 0.7 inches 209 pixels, 2.0999... * 100)."""
    return (round(cells * scale * DPI) + 0.01) / DPI


# --- a training run's preview.png ------------------------------------------------------------------------------------

def write_run_preview(image_uint8_chw: torch.Tensor, specs: list[OpSpec], backend: str, path: Path,
                      seed: int) -> Path:
    """The book's 2x4 ``apply`` grid of one image under a run's train pipeline, written atomically to ``path``.

    ``backend`` is the run's resolved backend (cpu or gpu; the gpu ops run on the CPU here, on 8 copies). The draws come
    from (seed, "preview") and torch's global RNG is left as it was, so writing the preview changes nothing in the run.
    """
    rows, cols, scale = RUN_PREVIEW_GRID
    copies = augmented_copies(image_uint8_chw, list(specs), backend, rows * cols, seed)
    return render_grid(copies, Path(path), rows=rows, cols=cols, scale=scale)
