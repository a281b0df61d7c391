"""augrun's Hydra plugins: the submitit plugin's Slurm launcher and the Optuna plugin's sweeper as augrun runs them.
Hydra instantiates plugins only from the hydra_plugins package, so the classes are defined here; what they do is
augrun.run.slurm_launcher's and augrun.run.optuna_search's. augrun's pre-check points `hydra/launcher=submitit_slurm`
and `hydra/sweeper=optuna` here (augrun.commands.precheck). Without an optional extra (augrun[slurm], augrun[optuna])
its class is not defined, so that Hydra's plugin scan of every command stays quiet.
"""
from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # augrun[slurm] not installed
    SubmititSlurmLauncher = None

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # augrun[optuna] not installed
    OptunaSweeper = None

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

if OptunaSweeper is not None:
    class AugrunOptunaSweeper(OptunaSweeper):
        """The plugin's search, which a stopped search continues with resume=true."""

        def sweep(self, arguments):
            from augrun.run import optuna_search
            return optuna_search.sweep(self.sweeper, arguments)
