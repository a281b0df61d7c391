"""Bad files (issue #12, section 7): image files a dataset or ``augrun preview`` decodes, and the run files
``augrun compare`` reads. Each bad file is one line naming it and what would be valid (exit status 2 where it stops
the command), or a damaged run in the comparison; files that are only unusual (16-bit, palette, CMYK, EXIF-rotated)
decode to the right pixels.

Every file is written here, in tmp_path. Most cases call augrun's functions in this process; four run
``python -m augrun`` as a user would, for the whole contract (exit status, one stderr line, no traceback).
"""
from __future__ import annotations

import contextlib
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import SMOKE, assert_user_error, make_image_folder, run_augrun, snapshot
from PIL import Image
from test_compare import epochs_for, make_run, make_sweep

import augrun.data.datasets
import augrun.data.folders
from augrun.commands.compare import compare_command
from augrun.compare import find_runs, load_run, write_report
from augrun.data.datasets import DataError
from augrun.data.decoding import MAX_PIXELS, ImageFileError, decode_image
from augrun.data.folders import load_image_folder
from augrun.errors import ConfigError, printable
from augrun.report.drawing import read_image

BOMB_SIDE = 12000  # 144 Mpx: above MAX_PIXELS, below twice PIL's limit, where PIL only warns


# --- making files --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> bytes:
    """A real, complete 1-bit PNG of 12000x12000 pixels: 17 KB on disk, 432 MB once decoded to RGB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (BOMB_SIDE, BOMB_SIDE)).save(path)  # ~0.3 s
    return path.read_bytes()


def png_bytes(width: int, height: int, color_type: int, bit_depth: int, pixels: bytes = b"") -> bytes:
    """A PNG written chunk by chunk: for what PIL will not save (48-bit RGB) or a header that claims any size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels))
            + chunk(b"IEND", b""))


def rows_of(values: np.ndarray) -> bytes:
    """PNG scanlines: each row of big-endian samples after a filter byte 0."""
    return b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)


def gray16_halves(path: Path, left: int = 0x4000, right: int = 0xC0FF, size: int = 32) -> Path:
    """A 16-bit grayscale PNG (PIL opens it as I;16): left half ``left``, right half ``right``."""
    values = np.full((size, size), left, dtype=np.uint16)
    values[:, size // 2:] = right
    Image.fromarray(values).save(path)
    return path


def one_line(error: BaseException | str) -> str:
    text = str(error)
    assert len(text.splitlines()) == 1, text  # splitlines: also \r, \x1c..\x1e, \x85, \u2028, which split a line too
    return text


# --- the decoder: files that decode, and to what ---------------------------------------------------------------------

def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def palette_with_transparency(folder: Path) -> Path:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putpixel((1, 0), 1)
    return save(image, folder / "pt.png", transparency=1)  # green is transparent: PIL warns if it goes straight to RGB


def rgb48(folder: Path) -> Path:
    """Red 0x1234, green 0xABCD, blue 0xFF00 at 16 bits each: PIL opens it as 8-bit RGB, keeping the high bytes."""
    path = folder / "rgb48.png"
    path.write_bytes(png_bytes(2, 2, 2, 16, rows_of(np.tile([0x1234, 0xABCD, 0xFF00], (2, 2)))))
    return path


def palette(folder: Path) -> Path:
    image = Image.new("P", (2, 2))
    image.putpalette([0, 0, 255])
    return save(image, folder / "p.gif")


def exif_rotated(folder: Path) -> Path:
    """3x1 pixels red, green, blue, with EXIF orientation 6: shown rotated 90 degrees clockwise, 1x3, red on top."""
    image = Image.new("RGB", (3, 1))
    for x, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        image.putpixel((x, 0), colour)
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(image, folder / "rotated.png", exif=exif)


# name: (make the file in a folder, pixels of decode_image(channels=None) at [0, 0], its shape, at channels=3)
DECODES = {
    "16-bit grayscale PNG": (lambda d: gray16_halves(d / "g16.png"), [0x40], (32, 32, 1), [0x40] * 3),
    "16-bit grayscale PNG, right half": (lambda d: gray16_halves(d / "g16.png", left=0xC0FF), [0xC0], (32, 32, 1),
                                         [0xC0] * 3),
    "48-bit RGB PNG": (rgb48, [0x12, 0xAB, 0xFF], (2, 2, 3), [0x12, 0xAB, 0xFF]),
    "32-bit integer TIFF holding 16-bit values": (lambda d: save(Image.new("I", (2, 2), 0x8000), d / "i.tif"),
                                                  [0x80], (2, 2, 1), [0x80] * 3),
    "32-bit float TIFF in [0, 1]": (lambda d: save(Image.fromarray(np.full((2, 2), 0.5, np.float32)), d / "f.tif"),
                                    [128], (2, 2, 1), [128] * 3),
    "32-bit float TIFF, black and white": (lambda d: save(Image.fromarray(np.array([[0, 1]], np.float32)), d / "f.tif"),
                                           [0], (1, 2, 1), [0] * 3),
    "grayscale": (lambda d: save(Image.new("L", (2, 2), 77), d / "l.png"), [77], (2, 2, 1), [77] * 3),
    "grayscale with alpha": (lambda d: save(Image.new("LA", (2, 2), (77, 10)), d / "la.png"), [77], (2, 2, 1),
                             [77] * 3),
    "1-bit": (lambda d: save(Image.new("1", (2, 2), 1), d / "one.png"), [255], (2, 2, 1), [255] * 3),
    "palette": (palette, [0, 0, 255], (2, 2, 3), [0, 0, 255]),
    "palette with transparency": (palette_with_transparency, [255, 0, 0], (1, 2, 3), [255, 0, 0]),
    "RGBA": (lambda d: save(Image.new("RGBA", (2, 2), (10, 20, 30, 0)), d / "rgba.png"), [10, 20, 30], (2, 2, 3),
             [10, 20, 30]),
    "CMYK": (lambda d: save(Image.new("CMYK", (2, 2), (0, 255, 0, 0)), d / "cmyk.tif"), [255, 0, 255], (2, 2, 3),
             [255, 0, 255]),
    "EXIF orientation": (exif_rotated, [255, 0, 0], (3, 1, 3), [255, 0, 0]),
}


@pytest.mark.parametrize("case", list(DECODES))
def test_decoder_gives_the_right_uint8_pixels(case: str, tmp_path: Path):
    make, native, shape, as_rgb = DECODES[case]
    path = make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on stderr
        own, rgb = decode_image(path, channels=None), decode_image(path, channels=3)
    assert own.dtype == np.uint8 and own.shape == shape and rgb.shape == (*shape[:2], 3)
    assert own[0, 0].tolist() == native and rgb[0, 0].tolist() == as_rgb


@pytest.mark.parametrize("make,expected", [
    (lambda d: save(Image.new("I", (2, 2), 70000), d / "i.tif"), "is an integer image of Pillow's mode I with values "
                                                                 "70000..70000; valid: an image file whose samples are"),
    (lambda d: save(Image.fromarray(np.array([[0, 2.5]], np.float32)), d / "f.tif"),
     "is a 32-bit float image (Pillow's mode F) with values 0..2.5; valid: an image file whose samples are 8-bit, or "
     "floats in [0, 1]"),
    (lambda d: save(Image.fromarray(np.array([[0, np.nan]], np.float32)), d / "f.tif"),
     "is a 32-bit float image (Pillow's mode F) with values not all finite"),
    (lambda d: save(Image.new("LAB", (2, 2)), d / "lab.tif"), "is an image of Pillow's mode LAB, which augrun cannot "
                                                              "turn into RGB"),
], ids=["32-bit integers above 16 bits", "floats above 1", "NaN floats", "LAB"])
def test_samples_without_an_8_bit_meaning_are_refused_naming_the_file_and_its_mode(make, expected, tmp_path: Path):
    path = make(tmp_path)
    with pytest.raises(ImageFileError) as error:
        decode_image(path, channels=3)
    assert one_line(error.value).startswith(f"{path} {expected}")


def test_float_images_in_0_1_scale_by_255(tmp_path: Path):
    values = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "ramp.tif")
    expected = np.round(values * 255).astype(np.uint8)
    assert np.array_equal(decode_image(tmp_path / "ramp.tif", channels=1)[..., 0], expected)


def test_16_bit_grayscale_scales_every_value_to_its_high_byte(tmp_path: Path):
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535
    Image.fromarray(values).save(tmp_path / "ramp.png")
    assert np.array_equal(decode_image(tmp_path / "ramp.png", channels=1)[..., 0], (values >> 8).astype(np.uint8))


def test_one_channel_on_request(tmp_path: Path):
    path = save(Image.new("RGB", (2, 2), (255, 0, 0)), tmp_path / "red.png")
    assert decode_image(path, channels=1).shape == (2, 2, 1)


# --- the decoder: files it refuses ------------------------------------------------------------------------------------

def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path, bomb_png: bytes):
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    with pytest.raises(ImageFileError) as error:
        decode_image(tmp_path / "bomb.png")
    message = one_line(error.value)
    assert str(tmp_path / "bomb.png") in message
    assert f"{BOMB_SIDE * BOMB_SIDE} pixels" in message and f"valid: an image of at most {MAX_PIXELS} pixels" in message


def test_the_limit_holds_when_pil_s_own_check_is_switched_off(tmp_path: Path, bomb_png: bytes, monkeypatch):
    """Some programs set Image.MAX_IMAGE_PIXELS = None; augrun's limit is its own and checks the header size."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    with pytest.raises(ImageFileError, match=f"is {BOMB_SIDE}x{BOMB_SIDE} = {BOMB_SIDE ** 2} pixels, above"):
        decode_image(tmp_path / "bomb.png")


def test_header_claiming_ten_gigapixels(tmp_path: Path):
    """Above twice PIL's limit PIL raises instead of warning: the same message."""
    (tmp_path / "huge.png").write_bytes(png_bytes(100_000, 100_000, 0, 1))
    with pytest.raises(ImageFileError, match=f"huge.png is 10000000000 pixels, above the limit of {MAX_PIXELS}"):
        decode_image(tmp_path / "huge.png")


def truncated_png(path: Path) -> None:
    save(Image.effect_noise((64, 64), 50), path)
    path.write_bytes(path.read_bytes()[:200])


UNDECODABLE = {
    "text file": lambda p: p.write_text("not an image"),
    "empty file": lambda p: p.write_bytes(b""),
    "truncated PNG": truncated_png,
    "PNG header without pixels": lambda p: p.write_bytes(png_bytes(8, 8, 0, 8)),
    "missing file": lambda p: None,
}


@pytest.mark.parametrize("case", list(UNDECODABLE))
def test_undecodable_file_is_one_line_naming_it(case: str, tmp_path: Path):
    path = tmp_path / "picture.png"
    UNDECODABLE[case](path)
    with pytest.raises(ImageFileError) as error:
        decode_image(path)
    message = one_line(error.value)
    assert message.startswith(f"cannot decode {path} (")
    assert message.endswith("); valid: an image file (PNG, JPEG, BMP, ...)")


@pytest.mark.parametrize("name, shown", [("a\nb.png", "a\\nb.png"), ("red\x1b[31m.png", "red\\x1b[31m.png"),
                                         ("tab\t\r.png", "tab\\t\\r.png"), ("line\u2028sep.png", "line\\u2028sep.png"),
                                         ("café .png", "café .png")])
def test_a_file_name_with_control_characters_keeps_the_message_on_one_line(name: str, shown: str, tmp_path: Path):
    (tmp_path / name).write_text("not an image")
    with pytest.raises(ImageFileError) as error:
        decode_image(tmp_path / name)
    assert f"{tmp_path}/{shown} (" in one_line(error.value)
    assert printable(tmp_path / name) == f"{tmp_path}/{shown}"


# --- the dataset and preview paths -------------------------------------------------------------------------------

def test_image_folder_decodes_16_bit_files(tmp_path: Path):
    make_image_folder(tmp_path, per_class=1)
    gray16_halves(tmp_path / "train" / "dog" / "wide.png")
    images = load_image_folder(tmp_path, image_size=32).train.images  # train: cat/0.png, dog/0.png, dog/wide.png
    assert images[2, :, 0, 0].tolist() == [0x40] * 3 and images[2, :, 0, -1].tolist() == [0xC0] * 3


BAD_FOLDER_FILES = {
    "decompression bomb": (lambda bomb: bomb, "bomb.png is 144000000 pixels"),
    "name with a newline": (lambda bomb: b"not an image", "cannot decode "),
}


@pytest.mark.parametrize("case", list(BAD_FOLDER_FILES))
@pytest.mark.parametrize("in_processes", [False, True], ids=["serial", "process pool"])
def test_image_folder_with_a_bad_file_is_one_data_error(case: str, in_processes: bool, tmp_path: Path, bomb_png: bytes,
                                                         monkeypatch):
    if in_processes:  # one image per task: the decoding process pool runs (and pickles DataError back) as for 1024+
        monkeypatch.setattr(augrun.data.folders, "_DECODE_CHUNK", 1)
    content, expected = BAD_FOLDER_FILES[case]
    make_image_folder(tmp_path)
    name = "bomb.png" if case == "decompression bomb" else "bad\nname.png"
    (tmp_path / "train" / "cat" / name).write_bytes(content(bomb_png))
    with pytest.raises(DataError) as error:
        load_image_folder(tmp_path, image_size=32)
    message = one_line(error.value)
    assert message.startswith("dataset.root: ") and expected in message and printable(name) in message
    assert "valid: " in message


def test_preview_reads_a_16_bit_png_as_one_gray_channel(tmp_path: Path):
    image = read_image(gray16_halves(tmp_path / "g16.png"))
    assert image.shape == (1, 32, 32) and image[0, 0, 0] == 0x40 and image[0, 0, -1] == 0xC0


def test_preview_names_image_for_a_bomb(tmp_path: Path, bomb_png: bytes):
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    with pytest.raises(ConfigError) as error:
        read_image(tmp_path / "bomb.png")
    assert one_line(error.value).startswith(f"image: {tmp_path / 'bomb.png'} is 144000000 pixels")


# --- compare: damaged run files ----------------------------------------------------------------------------------

GOOD_ROW = json.dumps(epochs_for(0.8)[0])


def row(**changes) -> str:
    return json.dumps({**epochs_for(0.8)[0], **changes})


# name: (metrics.jsonl text, what the run's one-line error must contain)
DAMAGED_METRICS = {
    "string accuracy": (f'{GOOD_ROW}\n{row(train_acc="abc")}\n', 'line 2: train_acc is "abc"; valid: a finite number'),
    "null accuracy": (f"{row(train_acc=None)}\n", "line 1: train_acc is null; valid: a finite number"),
    "null epoch": (f"{row(epoch=None)}\n", "epoch is null; valid: an integer"),
    "no epoch": ('{"train_acc": 0.5}\n', "no epoch; valid: epoch holding an integer"),
    "fractional epoch": (f"{row(epoch=1.5)}\n", "epoch is 1.5; valid: an integer"),
    "boolean": (f"{row(test_acc=True)}\n", "test_acc is true; valid: a finite number or null"),
    "NaN string": (f'{row(test_acc="NaN")}\n', 'test_acc is "NaN"; valid: a finite number or null'),
    "Infinity string": (f'{row(train_acc="Infinity")}\n', 'train_acc is "Infinity"'),
    "bare NaN accuracy": (row(test_acc=float("nan")) + "\n", "test_acc is NaN"),
    "bare Infinity accuracy": (row(train_acc=float("inf")) + "\n", "train_acc is Infinity"),
    "integer beyond any float": (row().replace('"train_acc": 0.8', '"train_acc": 1' + "0" * 400) + "\n",
                                 "train_acc is 1000"),
    "a list line": (f"{GOOD_ROW}\n[1, 2]\n", "line 2: [1, 2] is not an object"),
    "a number line": ("3\n", "line 1: 3 is not an object"),
    "a string line": ('"epoch 1"\n', 'line 1: "epoch 1" is not an object'),
    "truncated line before others": (f'{{"epoch": 1, "train_lo\n{GOOD_ROW}\n', "line 1: not JSON"),
    "truncated last line, newline written": (f'{GOOD_ROW}\n{{"epoch": 2, "train_lo\n', "line 2: not JSON"),
    "thousands of nested brackets": ("[" * 100_000 + f"\n{GOOD_ROW}\n", "line 1: not JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage\n", "unreadable metrics.jsonl"),
}


@pytest.mark.parametrize("case", list(DAMAGED_METRICS))
def test_damaged_metrics_make_a_damaged_run(case: str, tmp_path: Path):
    text, expected = DAMAGED_METRICS[case]
    run = make_run(tmp_path / "run", ["aug=none", "seed=0"], epochs_for(0.8))
    metrics = run / "metrics.jsonl"
    metrics.write_bytes(text) if isinstance(text, bytes) else metrics.write_text(text)
    result = load_run(run)
    assert not result.ok and expected in one_line(result.error), result.error


DAMAGED_SUMMARIES = {
    "string final accuracy": ({"final": {"test_acc": "abc"}}, 'damaged summary.json: final: test_acc is "abc"'),
    "final is a list": ({"final": [0.8]}, "damaged summary.json: final: [0.8] is not an object"),
    "string best accuracy": ({"best_test_acc": "0.9"}, 'best_test_acc is "0.9"; valid: a finite number or null'),
}


@pytest.mark.parametrize("case", list(DAMAGED_SUMMARIES))
def test_damaged_summary_makes_a_damaged_run(case: str, tmp_path: Path):
    changes, expected = DAMAGED_SUMMARIES[case]
    run = make_run(tmp_path / "run", ["aug=none", "seed=0"], epochs_for(0.8))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **changes}))
    result = load_run(run)
    assert not result.ok and expected in one_line(result.error), result.error


def test_unusual_but_valid_rows_still_count(tmp_path: Path):
    """A diverged run's NaN loss is a result, null test_acc is an epoch without evaluation, extra fields are a newer
    trainer's, a blank line is nothing."""
    run = make_run(tmp_path / "run", ["aug=none", "seed=0"], epochs_for(0.8))
    first, *others = (run / "metrics.jsonl").read_text().splitlines()
    unusual = row(train_loss=float("nan"), test_acc=None, new_field="text")
    (run / "metrics.jsonl").write_text("\n".join([unusual, "", *others]) + "\n")
    result = load_run(run)
    assert result.ok and len(result.epochs) == 3


def test_a_damaged_run_is_listed_and_the_others_compared(tmp_path: Path):
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82], "flip_only": [0.85, 0.9]})
    (root / "1" / "metrics.jsonl").write_text(f'{GOOD_ROW}\n{row(train_acc="abc")}\n')
    report = write_report([load_run(p) for p in find_runs([root])], root)
    assert [(g.label, len(g.completed), len(g.failed)) for g in report.groups] == [
        ("aug=flip_only", 2, 0), ("aug=none", 1, 1)]
    assert 'damaged metrics.jsonl line 2: train_acc is "abc"' in (root / "comparison.md").read_text()


# --- compare: the command line -------------------------------------------------------------------------------------

def compare_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        compare_command(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("augrun: error: "), lines
    return lines[0]


def test_bad_out_and_unknown_flags(tmp_path: Path, capsys, monkeypatch):
    root = make_sweep(tmp_path / "sweep", {"none": [0.8]})
    (tmp_path / "a_file").write_text("keep me")
    before = snapshot(tmp_path)
    cases = {
        "an existing file": (["--out", str(tmp_path / "a_file")],
                             f"--out: {tmp_path / 'a_file'} is a file; valid: --out DIR"),
        "inside a file": ([f"--out={tmp_path / 'a_file' / 'x' / 'y'}"],
                          f"is inside {tmp_path / 'a_file'}, which is a file; valid: --out DIR"),
        "no value at the end": (["--out"], "--out: no directory given; valid: --out DIR"),
        "empty value": (["--out="], "--out: no directory given"),
        "the next option as its value": (["--out", "--bogus"], "--out: no directory given"),
        "unknown flag": (["--outt", "x"], "--outt: unknown option of augrun compare; valid: --out DIR, --help"),
        "unknown flag with a newline": (["--a\nb"], "--a\\nb: unknown option"),
    }
    for name, (args, expected) in cases.items():
        assert expected in compare_error([str(root), *args], capsys), name
    monkeypatch.setattr("augrun.commands.compare.os.access", lambda path, mode: False)  # as a non-root user on a chmod 555 dir
    assert f"--out: {tmp_path} is not writable" in compare_error([str(root), "--out", str(tmp_path / "new")], capsys)
    assert snapshot(tmp_path) == before


def test_out_that_fails_while_writing(tmp_path: Path, capsys):
    root = make_sweep(tmp_path / "sweep", {"none": [0.8]})
    (tmp_path / "out" / "comparison.md").mkdir(parents=True)  # passes the checks, then cannot be replaced by a file
    message = compare_error([str(root), "--out", str(tmp_path / "out")], capsys)
    assert f"cannot write the report into {tmp_path / 'out'} (" in message and "valid: --out DIR" in message


def test_a_sweep_path_with_a_newline(tmp_path: Path, capsys):
    assert "sw\\neep does not exist" in compare_error([str(tmp_path / "sw\neep")], capsys)


# --- the whole command, as users run it --------------------------------------------------------------------------

def test_train_on_an_image_folder_with_a_bomb_exits_2(tmp_path: Path, bomb_png: bytes):
    make_image_folder(tmp_path / "images")
    (tmp_path / "images" / "train" / "dog" / "bomb.png").write_bytes(bomb_png)
    result = run_augrun("train", *SMOKE, "dataset=imagefolder", f"dataset.root={tmp_path / 'images'}", cwd=tmp_path)
    assert_user_error(result, f"dataset.root: {tmp_path / 'images/train/dog/bomb.png'} is 144000000 pixels, above "
                              f"the limit of {MAX_PIXELS} pixels")


def test_preview_of_a_16_bit_png_shows_its_grays(tmp_path: Path):
    gray16_halves(tmp_path / "g16.png")
    result = run_augrun("preview", "image=g16.png", "aug=none", "rows=1", "cols=1", "out=grid.png", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    with Image.open(tmp_path / "grid.png") as picture:
        grid = np.asarray(picture.convert("RGB")).astype(int)  # 150x150: the 32x32 image drawn at ~4.5x
    # 0x4000 and 0xC0FF are 64 and 192 in 8 bits; clipping them, as PIL's convert("RGB") does, gave white
    left, right = grid[75, 40], grid[75, 110]
    assert np.abs(left - 0x40).max() <= 1 and np.abs(right - 0xC0).max() <= 1, (left, right)


def test_compare_with_a_damaged_metrics_file(tmp_path: Path):
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82], "flip_only": [0.85, 0.9]})
    (root / "3" / "metrics.jsonl").write_text(f'{row(test_acc="NaN")}\n')
    result = run_augrun("compare", str(root), cwd=tmp_path, env={"COLUMNS": "300"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert 'aug=flip_only seed 1 (completed): damaged metrics.jsonl line 1: test_acc is "NaN"' in result.stdout
    assert (root / "comparison.csv").read_text().splitlines()[1].startswith("aug=flip_only,1,1,")


def test_compare_out_an_existing_file_exits_2(tmp_path: Path):
    root = make_sweep(tmp_path / "sweep", {"none": [0.8]})
    (tmp_path / "report").write_text("")
    result = run_augrun("compare", str(root), "--out", "report", cwd=tmp_path)
    assert_user_error(result, "--out: report is a file; valid: --out DIR naming a directory")


# --- file-system edges: one line each, wherever the folder is read ---------------------------------------------------

def truncated_jpeg(path: Path) -> Path:
    """A JPEG whose header reads (it passes the streamed folder's check) and whose pixels stop a third of the way."""
    import io
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    return path


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_a_symlink_loop_in_a_class_folder_is_one_line_naming_it(tmp_path: Path, storage: str):
    make_image_folder(tmp_path)
    loop = tmp_path / "train" / "cat" / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(DataError) as caught:
        augrun.data.datasets.load_dataset("imagefolder", str(tmp_path), image_size=8, storage=storage,
                                          cache_dir=str(tmp_path / "cache"))
    assert str(caught.value).startswith(f"dataset.root: {loop} cannot be followed (Too many levels of symbolic links)")


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_preview_show_dataset_refuses_a_loop_or_a_truncated_jpeg_in_one_line(workdir: Path, storage: str):
    from augrun.commands.preview import write_preview
    from augrun.commands.preview_options import preview_options
    from augrun.errors import UserError
    make_image_folder(workdir / "photos", per_class=4)
    (workdir / "photos" / "train" / "cat" / "loop.png").symlink_to(workdir / "photos" / "train" / "cat" / "loop.png")
    args = ["show=dataset", "dataset=imagefolder", f"dataset.root={workdir / 'photos'}", f"dataset.storage={storage}",
            f"out={workdir / 'grid.png'}", "rows=1", "cols=2"]
    with pytest.raises(UserError, match="^dataset.root: .*loop.png cannot be followed"):
        write_preview(preview_options(args))
    (workdir / "photos" / "train" / "cat" / "loop.png").unlink()
    for name in ("cat", "dog"):
        for index in range(4):
            truncated_jpeg(workdir / "photos" / "train" / name / f"{index}.png")
    with pytest.raises(UserError, match=r"^dataset.root: cannot decode .*\.png \(image file is truncated"):
        write_preview(preview_options(args))


@pytest.mark.slow
def test_a_streamed_file_that_fails_mid_run_is_one_line_and_a_summary_without_zeroed_numbers(workdir: Path):
    """Streamed files are checked from their headers up front; one whose pixels are cut short fails when decoded:
    one line, exit 2, and a summary.json that says what failed, with null where nothing was measured."""
    make_image_folder(workdir / "photos", per_class=6)
    bad = truncated_jpeg(workdir / "photos" / "train" / "dog" / "5.png")
    result = run_augrun("train", *SMOKE, "dataset=imagefolder", f"dataset.root={workdir / 'photos'}",
                        "dataset.storage=stream", "aug=crop", "aug.train.RandomResizedCrop.size=32", "trainer.workers=0",
                        "hydra.run.dir=run", cwd=workdir)
    assert_user_error(result, f"dataset.root: cannot decode {bad} (image file is truncated")
    summary = json.loads((workdir / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and str(bad) in summary["error"]
    assert summary["epochs_completed"] == 0 and summary["final"] is None and summary["total_seconds"] is None


@pytest.fixture
def nearly_full_disk(tmp_path: Path):
    """A 64 KiB tmpfs, filled to its last bytes (root only: mount)."""
    import subprocess
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not root'})")
    try:
        with open(mount / "filler", "wb") as filler:
            with contextlib.suppress(OSError):
                filler.write(b"\0" * 70_000)  # more than fits: the disk is full to its last block
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_during_hydras_own_writes_is_one_line(nearly_full_disk: Path, workdir: Path):
    result = run_augrun("train", *SMOKE, f"hydra.run.dir={nearly_full_disk / 'run'}", cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("augrun: error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
