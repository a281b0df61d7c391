"""Every random draw in a run is a pure function of (seed, purpose, epoch, step or image index).

So the same seed gives the same run whatever the worker count, and a run resumed at any step draws exactly what the
uninterrupted run would have drawn: nothing but the position needs to be saved.
"""
from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of names and numbers; stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
