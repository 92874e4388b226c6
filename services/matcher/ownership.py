"""Which partitions of ``identities.v1`` a matcher keeps, and how much of each.

Owning ``encodings.v1`` partition *p* means keeping every store of ``identities.v1`` partition
*p*; an owned store's neighbours are kept too, as read-only replicas, from whatever partitions
they hash to. Pure functions: :class:`~.shards.VisitorShards` applies what they decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from facestream.schemas.keys import partition_for

Keep = frozenset[str] | None
"""What is kept of a partition: None = every store, else just these stores."""


def wanted(
    owned: set[int], neighbours: Mapping[str, Sequence[str]], partitions: int
) -> dict[int, Keep]:
    """Partition -> what to keep of it, for the ``owned`` partitions and their replicas."""
    keep: dict[int, Keep] = {p: None for p in owned}
    replicas: dict[int, set[str]] = {}
    for store, near in neighbours.items():
        if partition_for(store, partitions) not in owned:
            continue
        for other in near:
            p = partition_for(other, partitions)
            if p not in owned:
                replicas.setdefault(p, set()).add(other)
    keep.update({p: frozenset(stores) for p, stores in replicas.items()})
    return keep


@dataclass(frozen=True)
class Plan:
    """How to go from what is kept to what is wanted."""

    forget: dict[int, frozenset[str]]
    """Partition -> the only stores of it to keep in memory (empty: none)."""
    rebuild: list[int]
    """Partitions to read from the start (new, or wanted more widely than kept)."""


def plan(kept: Mapping[int, Keep], wanted: Mapping[int, Keep]) -> Plan:
    """What to forget and what to read again so that ``kept`` becomes ``wanted``."""
    forget: dict[int, frozenset[str]] = {}
    rebuild: list[int] = []
    for p in sorted(set(kept) | set(wanted)):
        if p not in wanted:
            forget[p] = frozenset()
        elif p not in kept:
            rebuild.append(p)
        else:
            old, new = kept[p], wanted[p]
            if old is None or (new is not None and new <= old):
                if new is not None:
                    forget[p] = new  # narrower: forgetting is enough
            else:
                forget[p] = frozenset()
                rebuild.append(p)
    return Plan(forget, rebuild)


def keeps(kept: Mapping[int, Keep], partition: int, store_id: str) -> bool:
    """Whether ``store_id``'s records in ``partition`` are kept."""
    if partition not in kept:
        return False
    keep = kept[partition]
    return keep is None or store_id in keep
