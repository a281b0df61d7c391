"""Atomic file writes: every output augrun rewrites (metrics, summary, plots, reports, checkpoints, caches) goes through
here, so a reader, a kill or a full disk sees the old file or the new one, never half of one."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: Path, mode: str = "wb", *, fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` and rename it over ``path`` on success; on any failure the temp file goes.

    ``fsync`` forces the bytes to disk before the rename (checkpoints: a power cut must not leave an empty file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename on one filesystem (atomic), not a copy. A unique name, since parallel
    # sweep jobs may rewrite the same report. open(..., "x") rather than mkstemp: mkstemp makes the file 0600, and
    # outputs must keep the user's umask like any other file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)
