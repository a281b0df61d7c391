"""Real multi-process DDP on the CPU with gloo: augrun's own launcher, torchrun, a failing rank, parallel sweeps."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SMOKE, read_metrics, run_augrun

from augrun.config.command_line import parse_command_line
from augrun.config.compose import compose

TRAIN_SIZE = 320  # experiment=smoke
pytestmark = pytest.mark.slow


def only_run_dir(workdir: Path) -> Path:
    """Rank 0 alone writes: a multi-process run leaves exactly one run directory."""
    (run_dir,) = (workdir / "outputs").glob("*/*")
    return run_dir


def test_two_processes_cover_the_data_once_and_match_one_process(workdir: Path):
    # global batch 64: two ranks of 32 each (real DataLoader workers in each rank) against one process of 64
    two = run_augrun("train", *SMOKE, "trainer.epochs=2", "trainer.nprocs=2", "trainer.workers=1",
                     "hydra.run.dir=two", cwd=workdir)
    assert two.returncode == 0, two.stderr
    one = run_augrun("train", *SMOKE, "trainer.epochs=2", "trainer.workers=0", "hydra.run.dir=one", cwd=workdir)
    assert one.returncode == 0, one.stderr

    two_records, one_records = read_metrics(workdir / "two"), read_metrics(workdir / "one")
    assert [r["epoch"] for r in two_records] == [1, 2]  # one writer: no duplicated lines
    for r in two_records:  # all-reduced: the logged count is the whole training set, once
        assert r["examples_per_s"] * r["seconds"] == pytest.approx(TRAIN_SIZE)
    assert json.loads((workdir / "two" / "summary.json").read_text())["devices"] == ["cpu", "cpu"]
    assert "examples/sec on ['cpu', 'cpu']" in two.stdout and two.stdout.count("\nloss ") == 1

    # Same data order, same initial weights, and DDP's gradient average over equal shards equals the mean over the
    # global batch. The one difference is BatchNorm, whose statistics cover 32 images per rank instead of 64: a
    # perturbation of the normalisation, not of the optimisation, so losses stay within about 1 % (measured: 0.003
    # on a loss of 2.1-2.3) and accuracies within a few images of 320 and 256.
    for a, b in zip(two_records, one_records):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.03)
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=10 / TRAIN_SIZE)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=10 / 256)


def test_torchrun_joins_the_group_instead_of_launching(workdir: Path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "augrun",
                             "train", *SMOKE, "trainer.devices=cpu", "trainer.workers=0"],
                            cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(workdir)
    (record,) = read_metrics(run_dir)
    assert record["examples_per_s"] * record["seconds"] == pytest.approx(TRAIN_SIZE)
    assert len(json.loads((run_dir / "summary.json").read_text())["devices"]) == 2


FAIL_RANK_1 = '''
# Loaded by every Python process of the test (sitecustomize): rank 1 raises in its first epoch.
import augrun.run.engine as engine
import torch.distributed as dist
from augrun.data.datasets import DataError
original = engine.train_one_epoch
def train_one_epoch(*args, **kwargs):
    if dist.is_initialized() and dist.get_rank() == 1:
        raise {error}
    return original(*args, **kwargs)
engine.train_one_epoch = train_one_epoch
'''


@pytest.mark.parametrize("error, status, line", [
    ('RuntimeError("injected failure in rank 1")', 1, "rank 1 failed: RuntimeError: injected failure in rank 1"),
    # bad input met inside a rank is reported as bad input
    ('DataError("dataset.root", "injected; valid: a folder")', 2, "dataset.root: injected; valid: a folder"),
], ids=["failure", "bad-input"])
def test_a_rank_that_raises_takes_the_run_down_with_its_error(workdir: Path, error: str, status: int, line: str):
    hooks = workdir / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAIL_RANK_1.format(error=error))
    result = run_augrun("train", *SMOKE, "trainer.nprocs=2", "trainer.workers=0", cwd=workdir,
                        env={"PYTHONPATH": str(hooks)}, timeout=180)
    assert result.returncode == status
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"augrun: error: {line}", result.stderr[-2000:]
    summary = json.loads((only_run_dir(workdir) / "summary.json").read_text())
    assert summary["status"] == "failed" and line.split(": ", 1)[1] in summary["error"]


def test_joblib_launcher_runs_sweep_jobs_in_parallel(workdir: Path):
    result = run_augrun("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.devices=per_job",
                        *SMOKE, "trainer.workers=0", "seed=0,1", "hydra.sweep.dir=sweep", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((workdir / "sweep" / job / "summary.json").read_text())["status"] == "completed"
    # Hydra's joblib launcher, not the basic one, ran the jobs
    assert "hydra_joblib_launcher" in (workdir / "sweep" / "multirun.yaml").read_text()
    assert (workdir / "sweep" / "comparison.csv").is_file()


def test_submitit_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    command = parse_command_line(["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=1"])
    cfg = compose(command, command.overrides)  # as the pre-check composes: the schema registered, Hydra's node kept
    assert cfg.hydra.launcher.gpus_per_node == 1 and "submitit" in cfg.hydra.launcher._target_


def test_a_stopped_ddp_model_is_freed_before_its_process_group_is_destroyed(tmp_path: Path):
    # A DDP model freed after its group frees the group from its Reducer, holding the GIL: a deadlock that was seen
    # on a rank stopped by a signal, whose traceback kept the model alive past destroy_process_group.
    import weakref

    import torch
    import torch.distributed as dist

    from augrun import signals
    from augrun.run import distributed

    freed_while_grouped: list[bool] = []

    def train() -> None:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        model(torch.ones(3, 4)).sum().backward()  # a real allreduce of the gradient bucket
        weakref.finalize(model, lambda: freed_while_grouped.append(dist.is_initialized()))
        raise signals.Stopped(15)

    with pytest.raises(signals.Stopped):
        with distributed.process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1):
            train()
    assert freed_while_grouped == [True]
    assert not dist.is_initialized()
