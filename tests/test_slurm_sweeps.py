"""augrun on a real single-node Slurm, the half of tests/test_slurm.py about sweeps and ranks (its own file, so that
pytest-xdist runs the two halves side by side): Ctrl-C to a sweep, and jobs of two tasks trained as one DDP run."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_metrics, without_timing
from slurm_cluster import MEDIUM, QUICK, SLURM, augrun, epochs, running_jobs, sbatch, wait_for_job, when

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory, slurm) -> list[dict]:
    """augrun's own two-process DDP run (gloo, CPU): what a job of two Slurm tasks must equal."""
    folder = tmp_path_factory.mktemp("nprocs2")
    result = augrun("train", *QUICK, "trainer.epochs=2", "trainer.nprocs=2", "hydra.run.dir=run", cwd=folder,
                    env={k: v for k, v in slurm.items() if not k.startswith("SLURM_")})
    assert result.returncode == 0, result.stderr
    return without_timing(read_metrics(folder / "run"))


def test_a_job_of_two_tasks_is_one_ddp_run(slurm, tmp_path: Path, two_process_reference):
    sweep = augrun("train", "-m", *SLURM, "hydra.launcher.tasks_per_node=2", *QUICK, "trainer.epochs=2",
                   "hydra.sweep.dir=sweep", cwd=tmp_path, env=slurm)
    assert sweep.returncode == 0, sweep.stderr
    run_dir = tmp_path / "sweep" / "0"
    assert without_timing(read_metrics(run_dir)) == two_process_reference  # one run, each epoch once
    assert '"devices": [\n    "cpu",\n    "cpu"\n  ]' in (run_dir / "summary.json").read_text()


def test_srun_with_two_tasks_in_an_sbatch_script_is_one_ddp_run(slurm, tmp_path: Path, two_process_reference):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\nsrun {sys.executable} -m augrun train {' '.join(QUICK)} trainer.epochs=2 "
                      "hydra.run.dir=run\n")
    job = sbatch(["--ntasks=2", "--partition=debug", f"--output={tmp_path}/job.out", str(script)], slurm,
                 cwd=tmp_path)
    assert wait_for_job(job, slurm, timeout_s=300) == "COMPLETED", (tmp_path / "job.out").read_text()
    assert without_timing(read_metrics(tmp_path / "run")) == two_process_reference
    assert (tmp_path / "job.out").read_text().count("examples/sec on ['cpu', 'cpu']") == 1  # rank 0 alone speaks



def test_ctrl_c_to_a_sweep_cancels_its_jobs_after_their_checkpoints(slurm, tmp_path: Path):
    sweep = subprocess.Popen([sys.executable, "-m", "augrun", "train", "-m", *SLURM, *MEDIUM, "seed=0",
                              "hydra.sweep.dir=sweep"], cwd=tmp_path, env=slurm, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "sweep" / "0"
    when(lambda: (run_dir / "metrics.jsonl").is_file() and len(epochs(run_dir)) >= 3)
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, stderr
    assert "cancelling Slurm job(s)" in stderr and "resume=true" in stderr.splitlines()[-1]
    assert '"status": "stopped"' in (run_dir / "summary.json").read_text()  # its checkpoint came first
    assert running_jobs(slurm) == []
