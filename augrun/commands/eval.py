"""`augrun eval RUN_DIR [weights=model|ema] [overrides]`: score a run's saved weights on the test split of its dataset,
or of another dataset config, and write RUN_DIR/eval.json beside the run's files, changing none of them.

The config is the run's own as Hydra recorded it (RUN_DIR/.hydra/config.yaml), with the overrides applied on top
(augrun.config.recorded). Only what decides which test images are scored and how may change; the model, its training
and the form of the images its weights were trained on stay the run's.

Bad input exits 2 with one line naming the key or path, before torch is imported where the check needs no torch.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augrun import environment, rundir
from augrun.config.command_line import override_key
from augrun.config.compose import to_train_config
from augrun.config.recorded import compose_recorded
from augrun.config.schema import TrainConfig
from augrun.errors import CheckpointError, RunDirError, UserError, fail, printable

EVAL_USAGE = """usage: augrun eval RUN_DIR [weights=model|ema] [overrides]

Scores the weights in RUN_DIR/checkpoint.pt on the test split and writes RUN_DIR/eval.json (no other file of the run
changes). The overrides apply on top of the run's recorded config, RUN_DIR/.hydra/config.yaml:
  weights=ema                        the weights' moving average (a run with trainer.ema.decay > 0); default: model
  trainer.tta=flip                   also score each image with its mirror image (test_acc_tta)
  dataset=NAME, dataset.KEY=VALUE    another dataset config, or keys of the run's; the images keep the run's
                                     image_size, channels and normalisation, which its weights were trained on
  trainer.batch_size, trainer.devices, trainer.precision, trainer.workers, trainer.threads

examples:
  augrun eval outputs/2026-12-04/10-00-00
  augrun eval outputs/2026-12-04/10-00-00 weights=ema trainer.tta=flip
  augrun eval outputs/2026-12-04/10-00-00 dataset=imagefolder dataset.root=photos"""

WEIGHTS = ("model", "ema")
# what an evaluation may change: which test images are scored, and how
EVAL_TRAINER_KEYS = ("tta", "batch_size", "devices", "precision", "workers", "threads")
# the form of the images the weights were trained on: the run's, whichever dataset is scored
MODEL_INPUT_KEYS = ("image_size", "channels", "normalize", "mean", "std")
VALID_OVERRIDES = ("valid: weights=model|ema, dataset=NAME, dataset.KEY=VALUE (but "
                   f"{', '.join(MODEL_INPUT_KEYS)}), " + ", ".join(f"trainer.{key}" for key in EVAL_TRAINER_KEYS))
RUN_DIR_HOLDS = (f"a run directory that augrun train wrote, holding {rundir.CONFIG_DIR}/{rundir.CONFIG} (its config) "
                 f"and {rundir.CHECKPOINT} (its weights), e.g. outputs/2026-12-04/10-00-00")


@dataclass
class EvalRequest:
    run_dir: Path
    weights: str           # "model" or "ema"
    overrides: list[str]   # the command line's, weights= aside


def eval_command(argv: list[str]) -> None:
    if any(arg in ("-h", "--help") for arg in argv):
        print(EVAL_USAGE)
        return
    try:
        report = run_eval(argv)
    except UserError as error:
        fail(str(error))
    print(summary_line(report))


def run_eval(argv: list[str]) -> dict[str, Any]:
    """`augrun eval` below its help text: check, score, write eval.json; returns what it wrote (its "path" added)."""
    request = parse_eval_args(argv)
    check_run_dir(request.run_dir)
    cfg = eval_config(request.run_dir, request.overrides)
    # the checks above need no torch; importing it takes seconds, so a typo is reported before that
    from augrun.files import write_text_atomic
    from augrun.run import checkpoint
    from augrun.run.evaluation import score_weights

    began, started_at = time.perf_counter(), environment.now_utc()
    path = request.run_dir / rundir.CHECKPOINT
    state = checkpoint.load(path, key="", otherwise="another run's directory")
    check_same_model(state, request.run_dir, path)
    scored = score_weights(cfg, chosen_weights(state, request.weights, path), source=str(path), warn=_warn)
    where = environment.gather(device_kind=scored.device.type, gpu_indices=scored.gpu_indices,
                               threads=scored.threads, command=environment.command_line())
    d = cfg.dataset
    report = {"weights": request.weights,
              "dataset": {"name": d.name, "root": d.root, "split": "test", "images": scored.test_images},
              **scored.accuracy,
              "checkpoint": {"epoch": state["epoch"], "next_step": state["next_step"]},
              "overrides": request.overrides,
              "environment": environment.finished({**where, "started_at": started_at}),
              "seconds": time.perf_counter() - began}
    target = request.run_dir / rundir.EVAL
    try:
        write_text_atomic(target, json.dumps(report, indent=2) + "\n")
    except OSError as error:  # a run kept read-only, a full disk: the run's own files are untouched either way
        raise RunDirError(printable(target), f"cannot be written ({error.strerror or error}); valid: a run directory "
                          "that can take one more file") from None
    return {**report, "path": str(target)}


def parse_eval_args(argv: list[str]) -> EvalRequest:
    """RUN_DIR first, then weights= and the overrides, each checked to be one that an evaluation may change."""
    flags = [arg for arg in argv if arg.startswith("-")]
    if flags:
        raise UserError(printable(flags[0]), "not an option of augrun eval; valid: --help, or "
                        "augrun eval RUN_DIR [weights=model|ema] [overrides]")
    if not argv:
        raise UserError("RUN_DIR", f"not given; valid: augrun eval RUN_DIR [weights=model|ema] [overrides], with "
                        f"RUN_DIR {RUN_DIR_HOLDS}")
    if "=" in argv[0] and not Path(argv[0]).is_dir():  # `augrun eval weights=ema RUN_DIR`
        raise UserError("RUN_DIR", f"must come first, before {printable(argv[0])}; valid: augrun eval RUN_DIR "
                        "[weights=model|ema] [overrides]")
    weights, overrides = "model", []
    for arg in argv[1:]:
        if override_key(arg) == "weights":
            weights = arg.partition("=")[2]
            if arg != f"weights={weights}" or weights not in WEIGHTS:
                raise UserError("weights", f"{printable(arg)} names no weights of a run; valid: weights=model (the "
                                "trained weights, the default), weights=ema (their moving average)")
        else:
            check_override(arg)
            overrides.append(arg)
    return EvalRequest(Path(argv[0]), weights, overrides)


def check_override(override: str) -> None:
    key = override_key(override)
    section, _, rest = key.partition(".")
    name = rest.partition(".")[0]
    if key == "dataset" or (section == "dataset" and name not in MODEL_INPUT_KEYS):
        return
    if section == "trainer" and rest in EVAL_TRAINER_KEYS:
        return
    if section == "dataset":
        why = "the run's weights were trained on images of its size, channels and normalisation, which eval keeps"
    elif section == "model":
        why = f"the weights in {rundir.CHECKPOINT} belong to the run's model"
    elif section == "aug":
        why = "augments the training images only (test images never go through it), and the run's training is over"
    else:
        why = "not something an evaluation changes (it keeps the run's)"
    raise UserError(printable(key), f"{why}; {VALID_OVERRIDES}")


def eval_config(run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The run's recorded config with the overrides on top, typed and range-checked. Another dataset config
    (dataset=NAME) replaces the run's dataset section but for MODEL_INPUT_KEYS, which stay the run's."""
    composed = compose_recorded(run_dir / rundir.CONFIG_DIR / rundir.CONFIG, overrides,
                                groups={"dataset": MODEL_INPUT_KEYS})
    return to_train_config(composed)


def check_run_dir(path: Path) -> None:
    """`path` is one run's directory, with the config and the checkpoint eval reads."""
    shown = printable(path)
    if not path.exists():
        raise RunDirError(shown, f"no such directory; valid: {RUN_DIR_HOLDS}")
    if not path.is_dir():
        raise RunDirError(shown, f"is a file, not a run directory; valid: {RUN_DIR_HOLDS}")
    if rundir.is_sweep_root(path):
        jobs = sorted(p for p in path.iterdir() if p.is_dir() and rundir.is_run(p))
        example = printable(jobs[0] if jobs else path / "0")
        raise RunDirError(shown, f"is a sweep's root, which holds one run per job; valid: name one job directory, "
                          f"e.g. augrun eval {example}")
    for name, what in ((f"{rundir.CONFIG_DIR}/{rundir.CONFIG}", "config"), (rundir.CHECKPOINT, "weights")):
        if not (path / name).is_file():
            raise RunDirError(shown, f"holds no {name}, so no {what} to evaluate (not a run, or one that ended "
                              f"before writing it); valid: {RUN_DIR_HOLDS}")


def check_same_model(state: dict[str, Any], run_dir: Path, path: Path) -> None:
    """The checkpoint is the run's own: its model config is the one the run recorded (a checkpoint copied in from
    another run would otherwise fail as weights that 'do not fit', blaming the dataset)."""
    from dataclasses import asdict

    from augrun.run import checkpoint
    diffs = checkpoint.config_differences({"model": state["config"].get("model", {})},
                                          {"model": asdict(eval_config(run_dir, []).model)})
    if diffs:
        raise CheckpointError(printable(path), f"was saved by another model than the one {printable(run_dir)}/.hydra "
                              f"records (checkpoint -> run: {diffs[0]}); valid: the run directory the checkpoint was "
                              "saved in")


def chosen_weights(state: dict[str, Any], weights: str, path: Path) -> dict:
    """The state dict to score: the trained weights, or the checkpoint's moving average of them."""
    if weights == "model":
        return state["model"]
    if not state.get("ema"):  # None for a run that kept no average; absent in checkpoints from before EMA existed
        raise UserError("weights", f"ema, but {printable(path)} holds no EMA weights (the run had "
                        "trainer.ema.decay=0); valid: weights=model")
    return state["ema"]


def summary_line(report: dict[str, Any]) -> str:
    """`test acc 0.836 (weights=model, epoch 10) -> RUN_DIR/eval.json`: where the weights stand in the run, as the
    checkpoint says: after a finished epoch, or part-way through one (a stopped run's)."""
    epoch, step = report["checkpoint"]["epoch"], report["checkpoint"]["next_step"]
    stands = f"epoch {epoch - 1}" if step == 0 else f"epoch {epoch}, step {step}"
    tta = f", with flip tta {report['test_acc_tta']:.3f}" if "test_acc_tta" in report else ""
    return f"test acc {report['test_acc']:.3f}{tta} (weights={report['weights']}, {stands}) -> {report['path']}"


def _warn(message: str) -> None:
    print(f"augrun: warning: {message}", file=sys.stderr)

