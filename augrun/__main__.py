"""`python -m augrun train ...`: the form torchrun needs (torchrun --nproc-per-node 2 -m augrun train ...)."""
from augrun.cli import main

main()
