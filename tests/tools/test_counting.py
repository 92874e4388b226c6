"""The counting report's identity errors, on hand-built events: splits, merges, false members."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from facestream.schemas import Box, MatchEvent
from facestream.tools.counting import (
    CountingReport,
    PlannedSighting,
    identity_errors,
    report,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def sighting(i: int, person: str, store: str = "s1") -> PlannedSighting:
    return PlannedSighting(store, "entrance", T0 + timedelta(minutes=i), f"/p/{i}.jpg", person)


def event(
    s: PlannedSighting, kind: str, who: str, n: int = 0, distance: float | None = None
) -> MatchEvent:
    return MatchEvent(
        event_id=f"e-{s.frame_id}-{n}",
        kind=kind,
        member_id=who if kind == "member" else None,
        face_id=who if kind != "member" else None,
        store_id=s.store,
        camera_id=s.camera,
        captured_at=s.captured_at,
        frame_id=s.frame_id if n == 0 else f"{s.frame_id}x{n}",
        observation_id=f"o-{s.frame_id}-{n}",
        box=Box(top=0, right=10, bottom=10, left=0),
        model_version="m",
        distance=distance,
        margin=None if distance is None else 0.1,
    )


def test_a_perfect_run_has_no_errors() -> None:
    s = [sighting(0, "v:ann"), sighting(1, "v:ann"), sighting(2, "m:bob")]
    ids = identity_errors(
        s, [event(s[0], "new", "F1"), event(s[1], "returning", "F1"), event(s[2], "member", "bob")]
    )
    assert (ids.splits, ids.merges, ids.false_members, ids.missing, ids.extra) == (0, 0, 0, 0, 0)
    assert ids.member_recall == 1.0 and (ids.people, ids.identities) == (2, 2)


def test_splits_merges_and_false_members_are_counted() -> None:
    s = [
        sighting(i, p) for i, p in enumerate(["v:ann", "v:ann", "v:ann", "v:cat", "m:bob", "v:dan"])
    ]
    events = [
        event(s[0], "new", "F1"),
        event(s[1], "new", "F2"),  # ann split: a second FaceId
        event(s[2], "new", "F3"),  # ... and a third
        event(s[3], "returning", "F1"),  # cat merged into ann's F1
        event(s[4], "new", "F4"),  # member bob missed
        event(s[5], "member", "bob"),  # dan reported as member bob
    ]
    ids = identity_errors(s, events)
    assert (ids.splits, ids.split_people) == (2, 1)
    # F1 holds ann and cat: one merge. m:bob holds only dan (bob himself got F4): a false
    # member, not a merge.
    assert (ids.merges, ids.merged_identities) == (1, 1)
    assert (ids.member_sightings, ids.member_hits, ids.false_members) == (1, 0, 1)
    assert ids.false_member_examples and "v:dan" in ids.false_member_examples[0]


def test_member_greetings_report_their_distances() -> None:
    s = [sighting(i, p) for i, p in enumerate(["m:bob", "m:bob", "m:bob", "v:dan"])]
    events = [
        event(s[0], "member", "bob", distance=0.21),
        event(s[1], "member", "bob", distance=0.44),
        event(s[2], "member", "bob", distance=0.30),
        event(s[3], "member", "bob", distance=0.38),  # dan greeted as bob
    ]
    ids = identity_errors(s, events)
    assert ids.member_hit_distances == [0.21, 0.44, 0.30]
    assert ids.false_member_distances == [0.38]
    assert "distance 0.380, margin 0.100" in ids.false_member_examples[0]
    lines = CountingReport(days=[], identities=ids).lines()
    assert any("0.380 or more (the nearest false one): 1 of 3" in line for line in lines)


def test_missing_extra_and_replayed_events() -> None:
    s = [sighting(0, "v:ann"), sighting(1, "v:eve")]
    first = event(s[0], "new", "F1")
    ids = identity_errors(s, [first, first, event(s[0], "new", "F9", n=1)])
    assert (ids.decided, ids.missing, ids.extra) == (1, 1, 1)


def test_totals_and_errors_in_the_report() -> None:
    s = [sighting(0, "v:ann")]
    document = {
        "stores": [{"store": "s1", "timezone": "UTC"}],
        "days": [
            {
                "store": "s1",
                "date": "2026-11-27",
                "pv": 4,
                "uv": 4,
                "new": 4,
                "returning": 0,
                "members": [],
                "dwell_seconds_avg": None,
            }
        ],
        "sightings": [
            {
                "store": x.store,
                "camera": x.camera,
                "path": x.path,
                "person": x.person,
                "captured_at": x.captured_at.isoformat(),
            }
            for x in s
        ],
    }
    measured = {("s1", "2026-11-27"): {"pv": 5, "uv": 3, "new": 3, "returning": 0}}
    r = report(document, [event(s[0], "new", "F1")], measured)
    assert r.totals()["pv"] == {"measured": 5, "truth": 4}
    assert r.days[0].error("uv") == -0.25
    assert r.as_dict()["identities"]["member_recall"] is None
    assert any("splits 0" in line for line in r.lines())
