"""A Ctrl-C (a notebook's stop button) while augrun's first call imports torch: the call is interrupted, and the next
call in the same process works (Python would leave torch half-imported, failing every later import of it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# loaded by the child process: says on stderr when the import of torch begins, so the test signals inside it
HOOK = '''
import sys
class Announce:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            sys.stderr.write("importing torch\\n"); sys.stderr.flush()
        return None
sys.meta_path.insert(0, Announce())
'''

CALLS = '''
import augrun
try:
    augrun.train("experiment=smoke", "trainer.workers=0", "hydra.run.dir=first")
    print("first: ran")
except KeyboardInterrupt as error:
    print("first: interrupted:", error)
run = augrun.train("experiment=smoke", "trainer.workers=0", "hydra.run.dir=second")
print("second:", run.status)
'''


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_a_ctrl_c_during_the_first_import_of_torch_leaves_the_next_call_working(tmp_path: Path, delay: float):
    """Without augrun's care, a signal 0.3-1.5 s into torch's import (measured) left the process unable to import
    torch again: a segfault, or "partially initialized module 'torch'"."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    child = subprocess.Popen([sys.executable, "-c", CALLS], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "PYTHONUNBUFFERED": "1"})
    assert child.stderr.readline().strip() == "importing torch"
    time.sleep(delay)  # torch takes seconds to import: this lands inside it
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    assert "first: interrupted: stopped by signal 2 before training started" in stdout, stdout
    assert "second: completed" in stdout, stdout + stderr
