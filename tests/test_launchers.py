"""How augrun reads a launcher's environment (augrun.run.launchers): Slurm's task groups and requeues, in-process."""
from __future__ import annotations

import json

import pytest

from augrun.errors import UserError
from augrun.run import launchers

TASK = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "1234",
        "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[07-08]"}


def test_a_task_of_an_srun_step_with_several_tasks_is_a_rank_meeting_at_the_first_node():
    member = launchers.group_member(TASK)
    assert (member.launcher, member.rank, member.world_size, member.local_rank) == ("slurm", 3, 4, 1)
    assert member.init_method.startswith("tcp://gpu07:") and not member.writes
    port = int(member.init_method.rpartition(":")[2])
    assert launchers.SLURM_PORT_BASE <= port < launchers.SLURM_PORT_BASE + launchers.SLURM_PORT_SPAN
    assert launchers.group_member({**TASK, "SLURM_PROCID": "0"}).init_method == member.init_method  # all agree


def test_one_task_or_a_batch_script_is_no_group():
    assert launchers.group_member({**TASK, "SLURM_STEP_NUM_TASKS": "1"}) is None
    batch_script = {k: v for k, v in TASK.items() if k != "SLURM_STEP_NUM_TASKS"}  # sbatch's shell, before srun
    assert launchers.group_member(batch_script) is None


@pytest.mark.parametrize("name,value", [("SLURM_PROCID", "x"), ("SLURM_LOCALID", ""), ("SLURM_JOB_ID", "-1")])
def test_a_malformed_slurm_task_environment_is_one_line_naming_the_variable(name, value):
    with pytest.raises(UserError) as caught:
        launchers.group_member({**TASK, name: value})
    assert str(caught.value).startswith(f"{name}: got {value!r}") and "\n" not in str(caught.value)


def test_torchrun_wins_when_both_are_set():
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert launchers.group_member({**TASK, **torchrun}).launcher == "torchrun"


@pytest.mark.parametrize("hostlist,hosts", [("localhost", ["localhost"]), ("n[1-3]", ["n1", "n2", "n3"]),
                                            ("gpu[07-08,10],cpu1", ["gpu07", "gpu08", "gpu10", "cpu1"])])
def test_slurm_host_lists_expand(hostlist, hosts):
    assert launchers.expand_hostlist(hostlist) == hosts


def test_a_requeued_job_is_told_by_its_restart_count():
    assert launchers.requeued({"SLURM_RESTART_COUNT": "2"})
    assert not launchers.requeued({"SLURM_RESTART_COUNT": "0"}) and not launchers.requeued({})


# --- a group whose peers never come: bounded, and interruptible (augrun.run.rendezvous) ----------------------------

def lone_rank(port: int) -> dict[str, str]:
    """Rank 0 of a torchrun group of two whose rank 1 never starts."""
    return {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_rank_whose_peers_never_come_stops_at_the_timeout_in_one_line(workdir):
    from helpers import SMOKE, assert_user_error, run_augrun
    result = run_augrun("train", *SMOKE, "trainer.rendezvous_timeout_s=3", "hydra.run.dir=run", cwd=workdir,
                        env=lone_rank(free_port()), timeout=120)
    assert_user_error(result, "trainer.rendezvous_timeout_s: the other ranks did not come within 3 s (1 of 2 ranks")
    summary = json.loads((workdir / "run" / "summary.json").read_text())  # the run says what failed
    assert summary["status"] == "failed" and "rendezvous_timeout_s" in summary["error"]
    # what nobody measured is null, not a zero that reads as a measurement
    assert summary["epochs"] == 1 and summary["epochs_completed"] == 0 and summary["final"] is None
    assert summary["total_seconds"] is None and summary["devices"] is None and summary["examples_per_s"] is None


@pytest.mark.slow
@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_the_other_ranks_stops_at_once(signum, workdir):
    import os
    import signal as signals
    import subprocess
    import sys
    import time

    from helpers import SMOKE
    process = subprocess.Popen([sys.executable, "-m", "augrun", "train", *SMOKE, "hydra.run.dir=run"], cwd=workdir,
                               env={**os.environ, **lone_rank(free_port())}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (workdir / "run" / "preview.png").exists() and not (workdir / "run").exists():  # claimed: waiting
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.2)
    time.sleep(3)  # well inside the wait (its default timeout is 600 s)
    began = time.monotonic()
    process.send_signal(signals.Signals(signum))
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signum and time.monotonic() - began < 10
    assert stderr.strip().splitlines() == [f"augrun: stopped by signal {signum} while waiting for the other ranks (1 of "
                                           "2 ranks arrived at 127.0.0.1:" + stderr.split("127.0.0.1:")[1].split(")")[0]
                                           + "), before training"], stderr
    assert not (workdir / "run").exists()


def test_slurm_tasks_take_their_own_gpu_or_are_refused_in_one_line(monkeypatch):
    """Placement of a launcher's ranks, as a node's GPUs and its tasks must agree (no GPU needed: devices are named)."""
    from augrun.errors import ConfigError
    from augrun.run import distributed
    for name in list(launchers.TORCHRUN_MARKERS):
        monkeypatch.delenv(name, raising=False)
    task = {**TASK, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}
    for name, value in task.items():
        monkeypatch.setenv(name, value)
    member = launchers.group_member()
    two = distributed.resolve_devices("auto", nprocs=None, strategy="ddp", visible_gpus=2)
    assert (two.nprocs, two.strategy, str(distributed.member_device(two, member))) == (2, "ddp", "cuda:1")
    one = distributed.resolve_devices("auto", nprocs=None, strategy="ddp", visible_gpus=1)  # --gpus-per-task=1
    assert str(distributed.member_device(one, member)) == "cuda:0"
    monkeypatch.setenv("SLURM_LOCALID", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "3")
    monkeypatch.setenv("SLURM_PROCID", "2")
    with pytest.raises(ConfigError, match="^trainer.devices: slurm started 3 or more processes on this node, which sees "
                                          "2 GPUs; valid: one GPU per process"):
        distributed.resolve_devices("auto", nprocs=None, strategy="ddp", visible_gpus=2)
