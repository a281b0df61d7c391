"""One training run: prepared from a checked config (trainer), built (build), trained epoch by epoch (engine),
checkpointed and resumed (checkpoint, progress), rehearsed on made-up images by the pre-check (dryrun), and spread over
processes and devices (distributed; launchers: how augrun learns it is one rank of a group that torchrun or Slurm
started)."""
