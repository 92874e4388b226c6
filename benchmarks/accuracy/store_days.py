"""Counting accuracy on simulated stores of people the policy was not fitted on.

    .venv/bin/python -m benchmarks.accuracy.store_days [--seeds 1 2 3] [--policy FOLDER] [--json F]
        [--set FACESTREAM_MATCHER_NAME=VALUE ...]

For each seed, two simulations of the evaluation half of the shared photos
(:mod:`facestream.core.splits`), each replayed through the real pipeline on the local stack with
``facestream eval store``'s machinery:

* **LFW chain**: three stores in Paris, Shanghai and Ohio time zones over three days, 10 members
  (enrolled from 1-3 photos never seen at a visit), 8 strangers back the same day, 12 back on
  later days, 30 seen once;
* **East Asian store**: the 12 East Asian people of the evaluation half: 3 members, 2 back the
  same day, 3 back later, 4 once.

Prints PV and UV against the truth, member recall, false members, splits and merges, per run and
as mean and spread. ``--policy`` is a calibration folder (``facestream calibrate``, fitted on the
*fit* half) handed to the matcher; without it the matcher runs its defaults. ``--set`` hands the
workers any other setting, to compare one change against the defaults on the same stores (and
this process, whose replay reads ``FACESTREAM_CAMERA_KEY_BY``: ``--set
FACESTREAM_CAMERA_KEY_BY=store`` replays with store keys).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table
from facestream.cli.common import local_settings
from facestream.core.datasets import datasets_root
from facestream.core.engine import FaceEngine
from facestream.tools import simulate
from facestream.tools.store_eval import evaluate, fresh_settings

CHAIN = (
    simulate.StorePlan("paris", "Europe/Paris"),
    simulate.StorePlan("shanghai", "Asia/Shanghai"),
    simulate.StorePlan("ohio", "America/New_York"),
)


def plans(seed: int) -> dict[str, tuple[str, simulate.Plan]]:
    return {
        "lfw-chain": (
            "lfw-fold1",
            simulate.Plan(
                stores=CHAIN,
                days=3,
                members=10,
                returning_same_day=8,
                returning_later=12,
                once=30,
                seed=seed,
            ),
        ),
        "east-asian": (
            "lfw-east-asian",
            simulate.Plan(
                stores=(simulate.StorePlan("shanghai", "Asia/Shanghai"),),
                days=2,
                members=3,
                returning_same_day=2,
                returning_later=3,
                once=4,
                seed=seed,
            ),
        ),
    }


def run_one(
    name: str, data: str, plan: simulate.Plan, engine: FaceEngine, env: dict[str, str]
) -> dict[str, Any]:
    scenario = simulate.build(datasets_root() / data / "images", plan, engine)
    with tempfile.TemporaryDirectory(prefix=f"store-days-{name}-") as tmp:
        _, manifest, truth = scenario.write(Path(tmp))
        report = evaluate(
            manifest,
            truth,
            fresh_settings(local_settings(), name),
            lambda _: None,
            worker_env=env,
        )
    totals = report.totals()
    ids = report.identities
    return {
        "run": name,
        "seed": plan.seed,
        "pv": totals["pv"]["measured"],
        "pv_truth": totals["pv"]["truth"],
        "uv": totals["uv"]["measured"],
        "uv_truth": totals["uv"]["truth"],
        "pv_error": (totals["pv"]["measured"] - totals["pv"]["truth"]) / totals["pv"]["truth"],
        "uv_error": (totals["uv"]["measured"] - totals["uv"]["truth"]) / totals["uv"]["truth"],
        "member_recall": ids.member_recall,
        "false_members": ids.false_members,
        "false_member_distances": ids.false_member_distances,
        "member_hit_distances": ids.member_hit_distances,
        "splits": ids.splits,
        "merges": ids.merges,
        "people": ids.people,
        "sightings": ids.sightings,
        "missing": ids.missing,
    }


def summary(rows: list[dict[str, Any]], name: str) -> list[str]:
    mine = [r for r in rows if r["run"] == name]

    def spread(key: str, pct: bool = True) -> str:
        values = [float(r[key]) for r in mine if r[key] is not None]
        if not values:
            return "-"
        mean = statistics.fmean(values)
        sd = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{mean:+.1%} ± {sd:.1%}" if pct else f"{mean:.2f} ± {sd:.2f}"

    return [
        name,
        str(len(mine)),
        spread("pv_error"),
        spread("uv_error"),
        spread("member_recall").lstrip("+"),
        spread("false_members", pct=False),
        spread("splits", pct=False),
        spread("merges", pct=False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--policy", type=Path, default=None, help="A calibration folder.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A FACESTREAM_* variable for the workers (repeatable).",
    )
    args = parser.parse_args()
    env = {"FACESTREAM_MATCHER_POLICY_DIR": str(args.policy.resolve())} if args.policy else {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FACESTREAM_"):
            parser.error(f"--set wants FACESTREAM_NAME=VALUE, got {item!r}")
        env[name] = value
    # The replay reads some of them itself (FACESTREAM_CAMERA_KEY_BY: how it keys the frames
    # it publishes), so this process sees what the workers see.
    os.environ.update(env)
    engine = FaceEngine()
    rows = []
    for seed in args.seeds:
        for name, (data, plan) in plans(seed).items():
            row = run_one(name, data, plan, engine, env)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        markdown_table(
            [
                "store",
                "runs",
                "PV error",
                "UV error",
                "member recall",
                "false members",
                "splits",
                "merges",
            ],
            [summary(rows, name) for name in plans(0)],
        )
    )
    for name in plans(0):
        print(distances(rows, name))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def distances(rows: list[dict[str, Any]], name: str) -> str:
    """Where the false member greetings of a store's runs lie among its right ones: whether a
    stricter member rule could refuse them without refusing members."""
    mine = [r for r in rows if r["run"] == name]
    right = sorted(d for r in mine for d in r["member_hit_distances"])
    false = sorted(d for r in mine for d in r["false_member_distances"])
    if not right:
        return f"{name}: no member greeted"
    quartiles = statistics.quantiles(right, n=4) if len(right) > 1 else right * 3
    line = (
        f"{name}: right member greetings at raw distance {right[0]:.3f}-{right[-1]:.3f} "
        f"(quartiles {', '.join(f'{q:.3f}' for q in quartiles)}, {len(right)})"
    )
    if not false:
        return line + "; no false one"
    beyond = sum(1 for d in right if d >= false[0])
    return (
        line + f"; false ones at {', '.join(f'{d:.3f}' for d in false)}: refusing every greeting "
        f"from {false[0]:.3f} on would refuse {beyond} of the {len(right)} right ones"
    )


if __name__ == "__main__":
    main()
