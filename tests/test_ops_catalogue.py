"""`augrun ops` and the Gluon aliases (issue #16, items 1 and 2): the catalogue lists exactly what a config accepts,
each op's arguments, backends and summary come from torchvision and augrun's gpu backend, and the book's MXNet names
parse into the torchvision op with the same meaning and train on both backends through the real pre-check."""
from __future__ import annotations

import inspect

import pytest
import torchvision.transforms.v2 as T
from helpers import SMOKE, assert_user_error, refusal, run_augrun

from augrun.augment import gpu
from augrun.augment.catalogue import catalogue, describe, example_yaml, override_example
from augrun.augment.ops import BATCH_NAMES, REGISTRY, TRAIN_NAMES, parse_batch_pipeline, parse_train_pipeline
from augrun.commands import precheck
from augrun.commands.ops import ops_command
from augrun.config.command_line import parse_command_line
from augrun.errors import ConfigError

# the d2l chapter's MXNet pipelines (gluon.data.vision.transforms), and what each means in torchvision
GLUON_TRANSLATIONS = [
    ({"RandomFlipLeftRight": {}}, [("RandomHorizontalFlip", {})]),
    ({"RandomFlipTopBottom": {}}, [("RandomVerticalFlip", {})]),
    ({"RandomBrightness": {"brightness": 0.5}}, [("ColorJitter", {"brightness": 0.5})]),
    ({"RandomContrast": {"contrast": 0.3}}, [("ColorJitter", {"contrast": 0.3})]),
    ({"RandomSaturation": {"saturation": 0.4}}, [("ColorJitter", {"saturation": 0.4})]),
    ({"RandomHue": {"hue": 0.5}}, [("ColorJitter", {"hue": 0.5})]),  # the same turns: see test_hue_note_*
    ({"RandomColorJitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5}},
     [("ColorJitter", {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.5})]),
    ({"RandomFlipLeftRight": {}, "RandomResizedCrop": {"size": 32, "scale": [0.1, 1], "ratio": [0.5, 2]}},
     [("RandomHorizontalFlip", {}), ("RandomResizedCrop", {"size": 32, "scale": [0.1, 1], "ratio": [0.5, 2]})]),
]
BOOK_MXNET_OVERRIDES = ["+aug.train.RandomFlipLeftRight={}", "+aug.train.RandomColorJitter.brightness=0.5",
                        "+aug.train.RandomColorJitter.hue=0.5", "+aug.train.RandomBrightness.brightness=0.2"]


# --- one registry -----------------------------------------------------------------------------------------------------

def test_the_catalogue_lists_exactly_what_the_parser_accepts_aliases_included():
    listed = {e.name for e in catalogue()}
    assert listed == set(REGISTRY) == set(TRAIN_NAMES) | set(BATCH_NAMES)
    for entry in catalogue():  # every listed name parses in the section the catalogue names, with its example value
        parse = parse_batch_pipeline if entry.section == "aug.batch" else parse_train_pipeline
        key, value = override_example(entry).split("=", 1)
        parse({entry.name: {key.rsplit(".", 1)[1]: _yaml_scalar(value)}})
    with pytest.raises(ConfigError, match="unknown augmentation op 'RandomFoo'"):
        parse_train_pipeline({"RandomFoo": {}})
    with pytest.raises(ConfigError, match="unknown augmentation op 'MixUp'"):  # the section matters too
        parse_train_pipeline({"MixUp": {}})


def _yaml_scalar(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def test_entries_read_arguments_summaries_and_backends_from_torchvision_and_the_gpu_backend():
    jitter = describe("ColorJitter")
    assert jitter.arguments == {n: p.default for n, p in inspect.signature(T.ColorJitter).parameters.items()}
    assert jitter.summary == inspect.getdoc(T.ColorJitter).splitlines()[0]
    assert jitter.backends == ("cpu", "gpu") and jitter.section == "aug.train"
    assert describe("AutoAugment").backends == ("cpu",) and "AutoAugment" not in gpu.GPU_OPS
    assert describe("MixUp").section == "aug.batch" and describe("MixUp").backends == ("cpu", "gpu")
    for entry in catalogue():
        runs_as = REGISTRY[entry.name].runs_as
        assert ("gpu" in entry.backends) == (runs_as in gpu.GPU_OPS or runs_as in gpu.BATCH_OP_CLASSES), entry.name
        assert entry.summary and "\n" not in entry.summary


def test_augrun_ops_prints_a_table_of_every_op_with_aliases(capsys):
    ops_command([])
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out, name
    assert "alias of ColorJitter(brightness=...)" in out and "alias of RandomHorizontalFlip(p=...)" in out
    assert "aug.batch (per batch)" in out and "aug.train (per image)" in out


def test_augrun_ops_name_shows_one_op_with_yaml_and_override(capsys):
    assert example_yaml(describe("ColorJitter")) == "ColorJitter: {brightness: 0.5}"
    ops_command(["ColorJitter"])
    out = capsys.readouterr().out
    assert "ColorJitter: {brightness: 0.5}" in out and "+aug.train.ColorJitter.brightness=0.5" in out
    assert "hue=None" in out and "cpu, gpu" in out and "RandomBrightness" in out  # its Gluon aliases
    ops_command(["RandomResizedCrop"])
    assert "(width, height)" in capsys.readouterr().out  # where Gluon's same-named op differs


# --- Gluon aliases ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("gluon", "torchvision"), GLUON_TRANSLATIONS, ids=["+".join(g) for g, _ in GLUON_TRANSLATIONS])
def test_a_gluon_pipeline_gives_the_specs_of_its_torchvision_equivalent(gluon, torchvision):
    specs = parse_train_pipeline(gluon)
    equivalent = parse_train_pipeline({name: kwargs for name, kwargs in torchvision})
    assert [(s.name, s.kwargs) for s in specs] == [(s.name, s.kwargs) for s in equivalent] == torchvision
    assert [s.key for s in specs] == [f"aug.train.{name}" for name in gluon]  # messages name what the user wrote


def test_hue_note_states_gluon_rotates_hls_hue_by_the_same_turns_not_yiq(capsys):
    # MXNet's _image_random_hue adds alpha*360 degrees to the HLS hue, alpha in [1-hue, 1+hue]: a shift of +-hue
    # turns, torchvision's hue_factor; only mx.image.HueJitterAug rotates YIQ (by alpha*pi, half the angle)
    assert parse_train_pipeline({"RandomHue": {"hue": 0.2}})[0].kwargs == {"hue": 0.2}
    ops_command(["RandomHue"])
    out = " ".join(capsys.readouterr().out.split())
    assert "alias of ColorJitter(hue=...)" in out and "HLS hue" in out and "YIQ" in out and "up to 0.5" in out
    ops_command(["RandomColorJitter"])
    assert "not clamped at 0" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("pipeline", "expected"), [
    ({"RandomBrightness": {"brightness": -1}}, "aug.train.RandomBrightness.brightness: got -1"),
    ({"RandomHue": {"hue": 0.7}}, "aug.train.RandomHue.hue: got 0.7; valid: a number in [0, 0.5]"),
    ({"RandomBrightness": {}}, "aug.train.RandomBrightness.brightness: missing"),
    ({"RandomColorJitter": {"jitter": 1}}, "aug.train.RandomColorJitter.jitter: unknown argument of "
                                           "RandomColorJitter; valid: brightness, contrast, saturation, hue"),
    ({"RandomFlipLeftRight": {"p": 2}}, "aug.train.RandomFlipLeftRight.p: got 2"),
])
def test_alias_errors_name_the_key_as_written(pipeline, expected):
    with pytest.raises(ConfigError) as caught:
        parse_train_pipeline(pipeline)
    assert str(caught.value).startswith(expected), str(caught.value)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_the_books_mxnet_pipeline_passes_the_real_precheck_on_both_backends(backend, in_workdir, monkeypatch):
    # the pre-check composes the command, builds the pipeline and dry-runs a training step on made-up images
    # through it on the chosen backend (gpu's ops are plain torch, so they run on this CPU too)
    monkeypatch.setattr(precheck.rundir, "claim", lambda path, *a, **k: path)  # nothing left behind in the workdir
    argv = ["experiment=smoke", "trainer.devices=cpu", f"aug.backend={backend}", "aug.train={}", *BOOK_MXNET_OVERRIDES]
    checked = precheck.precheck_train(parse_command_line(argv), visible_gpus=lambda: 0)
    assert [job.notes for job in checked.jobs] == [[]]  # not a warning either
    message = refusal(*SMOKE, f"aug.backend={backend}", "+aug.train.RandomHue.hue=0.9")
    assert message.startswith("aug.train.RandomHue.hue: got 0.9"), message


# --- the command as users run it --------------------------------------------------------------------------------------

def test_augrun_ops_colorjitter_shows_how_to_add_it(capsys):
    ops_command(["ColorJitter"])
    out, err = capsys.readouterr()
    assert "+aug.train.ColorJitter.brightness=0.5" in out and not err


def test_augrun_ops_unknown_name_exits_2_with_one_line(tmp_path):
    result = run_augrun("ops", "RandomFoo", cwd=tmp_path, timeout=60)
    assert_user_error(result, "ops: unknown op 'RandomFoo'; valid: AugMix, AutoAugment, ColorJitter")
    assert "RandomFlipLeftRight" in result.stderr
