"""A fixed split of people into a fitting half and an evaluation half.

Accuracy that users can trust is measured on people the policy was not fitted on. Every tool
that fits (``facestream calibrate``, the shipped defaults) uses the ``fit`` people of a photo
folder, and every tool that reports (``facestream eval``, the simulator) can be restricted to
the ``eval`` people. The split is a hash of the person's folder name, so it is the same on every
machine, for every data set in the LFW layout, and needs no list kept anywhere.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["fit", "eval"]
SPLITS: tuple[Split, ...] = ("fit", "eval")


def person_split(name: str) -> Split:
    """``fit`` or ``eval`` for the person whose folder is ``name`` (half each, by hash)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "fit" if digest[0] % 2 == 0 else "eval"
