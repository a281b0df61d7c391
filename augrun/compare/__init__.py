"""Compare the runs of a sweep: group by overrides (seeds pooled), mean ± std per group, difference to ``aug=none``.

Reads only the run-directory contract (``metrics.jsonl``, ``summary.json``, ``.hydra/overrides.yaml``), so it works
on finished sweeps (``augrun compare``) and at the end of one (the ``SweepReport`` Hydra callback). No torch import:
a report must be quick and must not need a GPU stack. runs: reading; stats: grouping and statistics; render: files and
console; callback: the Hydra callback (configs name it as augrun.compare.SweepReport).
"""
from augrun.compare.callback import SweepReport
from augrun.compare.render import CSV_COLUMNS, compare_paths, print_report, table_console, write_report
from augrun.compare.runs import CompareError, RunResult, find_runs, load_run
from augrun.compare.stats import Group, Report, build_report, group_runs

__all__ = ["CSV_COLUMNS", "CompareError", "Group", "Report", "RunResult", "SweepReport", "build_report", "compare_paths",
           "find_runs", "group_runs", "load_run", "print_report", "table_console", "write_report"]
