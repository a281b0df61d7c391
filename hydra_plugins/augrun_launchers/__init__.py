"""augrun's Hydra launcher plugin: the submitit plugin's Slurm launcher as augrun runs it. Hydra instantiates launchers
only from the hydra_plugins package, so the class is defined here; what it does is augrun.run.slurm_launcher's.
augrun's pre-check points `hydra/launcher=submitit_slurm` here (augrun.commands.precheck). Without the optional extra
augrun[slurm] this module defines nothing, so that Hydra's plugin scan of every command stays quiet.
"""
from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # augrun[slurm] not installed
    SubmititSlurmLauncher = None

if SubmititSlurmLauncher is not None:
    class AugrunSlurmLauncher(SubmititSlurmLauncher):
        """The plugin's launcher: its options and submission, augrun's signals, ranks and waiting."""

        def __call__(self, *job):
            """One task of a job, on a Slurm node: the plugin's job run under augrun's rules."""
            from augrun.run import slurm_launcher
            return slurm_launcher.run_task(super().__call__, *job)

        def launch(self, job_overrides, initial_job_idx):
            from augrun.run import slurm_launcher
            return slurm_launcher.submit_and_wait(self, job_overrides, initial_job_idx)
