"""The counting report: what the pipeline said about a simulated chain, beside the truth.

Two views of the same run:

* **the figures a store sees**: PV, UV, new, returning, members and dwell per store and local
  day, measured (the sink's statistics in Redis) against the truth of the plan;
* **the identity errors behind them**, from the match events joined to the planned sightings by
  frame id: a *split* is one person given several identities (each extra FaceId inflates UV,
  "new" and often PV), a *merge* is several people given one identity (it deflates UV and can
  turn a stranger into someone else's visits). Member recall is the share of a member's
  sightings answered with their member id; a *false member* is a sighting answered with a member
  id that is not the person's own (a stranger greeted as member 1234: the costliest error).

Visitor identities are per store by design (a FaceId is minted in a store's shard), so splits
and merges are counted within a store; member ids are chain-wide.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from facestream.schemas import MatchEvent
from facestream.services.camera.publisher import derive_frame_id

FIGURES = ("pv", "uv", "new", "returning", "dwell_seconds_avg")
HEADER = "store        date        PV (true)   UV (true)   new (true)   ret (true)   dwell s (true)"


@dataclass(frozen=True)
class PlannedSighting:
    """One row of the truth: this frame shows this person (``m:<member>`` or ``v:<name>``)."""

    store: str
    camera: str
    captured_at: datetime
    path: str
    person: str

    @property
    def frame_id(self) -> str:
        """The id the camera publisher gives this frame."""
        return derive_frame_id(self.store, self.camera, self.captured_at, self.path)


@dataclass(frozen=True)
class DayFigures:
    """One store's day: measured beside the truth."""

    store: str
    date: str
    measured: dict[str, Any]
    truth: dict[str, Any]

    def error(self, key: str) -> float | None:
        """Relative error of one figure (None where the truth is zero or missing)."""
        m, t = self.measured.get(key), self.truth.get(key)
        if m is None or t in (None, 0):
            return None
        return (float(m) - float(t)) / float(t)


@dataclass(frozen=True)
class IdentityErrors:
    """Splits, merges and member decisions, from the events joined to the truth."""

    sightings: int
    decided: int
    """Sightings that got a match event (the face was found and passed the quality gate)."""
    missing: int
    """Sightings without an event: no face found, or the quality gate refused it."""
    extra: int
    """Events for faces the plan does not list (a second face in a frame)."""
    people: int
    identities: int
    splits: int
    """Extra identities given to people: sum over (store, person) of identities - 1."""
    split_people: int
    merges: int
    """Extra people folded into identities: sum over (store, identity) of people - 1."""
    merged_identities: int
    member_sightings: int
    member_hits: int
    false_members: int
    false_member_examples: list[str] = field(default_factory=list)
    member_hit_distances: list[float] = field(default_factory=list)
    """Raw distance of every right member greeting (to compare with the false ones)."""
    false_member_distances: list[float] = field(default_factory=list)
    """Raw distance of every stranger greeted as a member (or member greeted as another)."""

    @property
    def member_recall(self) -> float | None:
        return self.member_hits / self.member_sightings if self.member_sightings else None


@dataclass(frozen=True)
class CountingReport:
    """The whole report: per-day figures, totals and identity errors."""

    days: list[DayFigures]
    identities: IdentityErrors

    def totals(self) -> dict[str, dict[str, int]]:
        """PV, UV, new and returning summed over every store and day, measured and true."""
        out: dict[str, dict[str, int]] = {}
        for key in ("pv", "uv", "new", "returning"):
            out[key] = {
                "measured": sum(int(d.measured.get(key) or 0) for d in self.days),
                "truth": sum(int(d.truth.get(key) or 0) for d in self.days),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        ids = self.identities
        return {
            "totals": self.totals(),
            "days": [
                {
                    "store": d.store,
                    "date": d.date,
                    **{
                        k: {"measured": d.measured.get(k), "truth": d.truth.get(k)} for k in FIGURES
                    },
                    "members": {
                        "measured": sorted(d.measured.get("members") or []),
                        "truth": sorted(d.truth.get("members") or []),
                    },
                }
                for d in self.days
            ],
            "identities": {**asdict(ids), "member_recall": ids.member_recall},
        }

    def lines(self) -> list[str]:
        """The report as text, a store-day per line, then the identity errors."""
        out = [HEADER]
        for d in self.days:
            cells = []
            for key in ("pv", "uv", "new", "returning"):
                cells.append(f"{d.measured.get(key)!s:>4} ({d.truth.get(key)!s:>3})")
            dwell = d.measured.get("dwell_seconds_avg")
            tdwell = d.truth.get("dwell_seconds_avg")
            cells.append(f"{_num(dwell):>7} ({_num(tdwell)})")
            out.append(f"{d.store:<12} {d.date}  " + "   ".join(cells))
        totals = self.totals()
        out.append(
            "total        "
            + "  ".join(
                f"{k} {v['measured']} vs {v['truth']} ({_pct(v['measured'], v['truth'])})"
                for k, v in totals.items()
            )
        )
        ids = self.identities
        recall = "n/a" if ids.member_recall is None else f"{ids.member_recall:.1%}"
        out.append(
            f"identities   {ids.sightings} sightings, {ids.decided} decided, {ids.missing} without "
            f"a face, {ids.extra} extra faces; {ids.people} people got {ids.identities} identities"
        )
        out.append(
            f"errors       splits {ids.splits} ({ids.split_people} people), merges {ids.merges} "
            f"({ids.merged_identities} identities), member recall {recall} "
            f"({ids.member_hits}/{ids.member_sightings}), false members {ids.false_members}"
        )
        out.extend(f"  false member: {e}" for e in ids.false_member_examples)
        if ids.false_member_distances and ids.member_hit_distances:
            nearest = min(ids.false_member_distances)
            hits = ids.member_hit_distances
            beyond = sum(1 for d in hits if d >= nearest)
            out.append(
                f"  right member greetings at distance {nearest:.3f} or more (the nearest false "
                f"one): {beyond} of {len(hits)}"
            )
        return out


def _pair(measured: Any, truth: Any) -> dict[str, Any]:
    return {"measured": measured, "truth": truth}


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.0f}"


def _dist(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(measured: int, truth: int) -> str:
    return "n/a" if not truth else f"{(measured - truth) / truth:+.1%}"


def identity_of(event: MatchEvent) -> str:
    """The person the pipeline decided on: ``m:<member id>`` or ``f:<store>/<face id>``."""
    if event.kind == "member":
        return f"m:{event.member_id}"
    return f"f:{event.matched_store_id or event.store_id}/{event.face_id}"


def identity_errors(
    sightings: Sequence[PlannedSighting], events: Iterable[MatchEvent]
) -> IdentityErrors:
    """Join events to sightings by frame id and count what went wrong."""
    by_frame = {s.frame_id: s for s in sightings}
    decided: dict[str, list[MatchEvent]] = defaultdict(list)
    extra = 0
    seen_events: set[str] = set()
    for event in events:
        if event.event_id in seen_events:
            continue  # at-least-once delivery: a replayed event is the same decision
        seen_events.add(event.event_id)
        if event.frame_id in by_frame:
            decided[event.frame_id].append(event)
        else:
            extra += 1
    ids_of_person: dict[tuple[str, str], set[str]] = defaultdict(set)
    people_of_id: dict[tuple[str, str], set[str]] = defaultdict(set)
    member_sightings = member_hits = false_members = 0
    examples: list[str] = []
    hit_distances: list[float] = []
    false_distances: list[float] = []
    for frame, sighting in by_frame.items():
        found = decided.get(frame, [])
        if len(found) > 1:
            # Several faces in one planned frame: the planned person is the one decided on
            # consistently with the rest; count the others as extra faces.
            extra += len(found) - 1
        if sighting.person.startswith("m:"):
            member_sightings += 1
        if not found:
            continue
        event = found[0]
        ident = identity_of(event)
        ids_of_person[(sighting.store, sighting.person)].add(ident)
        people_of_id[(sighting.store, ident)].add(sighting.person)
        if event.kind == "member":
            right = ident == sighting.person
            if event.distance is not None:
                (hit_distances if right else false_distances).append(event.distance)
            if right:
                member_hits += 1
            else:
                false_members += 1
                if len(examples) < 10:
                    examples.append(
                        f"{sighting.person} at {sighting.store}/{sighting.camera} "
                        f"{sighting.captured_at.isoformat()} answered {ident}"
                        f" (distance {_dist(event.distance)}, margin {_dist(event.margin)})"
                    )
    splits = sum(len(ids) - 1 for ids in ids_of_person.values())
    merges = sum(len(p) - 1 for p in people_of_id.values())
    return IdentityErrors(
        sightings=len(by_frame),
        decided=sum(1 for f in by_frame if decided.get(f)),
        missing=sum(1 for f in by_frame if not decided.get(f)),
        extra=extra,
        people=len({s.person for s in sightings}),
        identities=len({ident for _, ident in people_of_id}),
        splits=splits,
        split_people=sum(1 for ids in ids_of_person.values() if len(ids) > 1),
        merges=merges,
        merged_identities=sum(1 for p in people_of_id.values() if len(p) > 1),
        member_sightings=member_sightings,
        member_hits=member_hits,
        false_members=false_members,
        false_member_examples=examples,
        member_hit_distances=hit_distances,
        false_member_distances=false_distances,
    )


def read_truth(document: Mapping[str, Any]) -> tuple[list[PlannedSighting], list[dict[str, Any]]]:
    """The sightings and the per-day truth of a ``truth.json`` written by the simulator."""
    sightings = [
        PlannedSighting(
            store=s["store"],
            camera=s["camera"],
            captured_at=datetime.fromisoformat(s["captured_at"]),
            path=s["path"],
            person=s["person"],
        )
        for s in document["sightings"]
    ]
    return sightings, list(document["days"])


def report(
    document: Mapping[str, Any],
    events: Iterable[MatchEvent],
    measured: Mapping[tuple[str, str], Mapping[str, Any]],
) -> CountingReport:
    """The report for a truth document, the run's match events and the measured statistics
    (``(store, date) -> the keys of facestream stats --json``)."""
    sightings, days = read_truth(document)
    figures = [
        DayFigures(d["store"], d["date"], dict(measured.get((d["store"], d["date"]), {})), d)
        for d in days
    ]
    return CountingReport(figures, identity_errors(sightings, events))
