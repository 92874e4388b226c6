"""``facestream calibrate``: fit a deployment's decision policies on its own photos."""

from __future__ import annotations

from pathlib import Path

import click

from facestream.cli.common import emit, fail, json_option, progress_option, show_progress


@click.command("calibrate")
@click.option(
    "--images",
    "folders",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    required=True,
    help="A folder per person (LFW layout); repeat for each data set / population.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Calibration folder to write (policy.json, cohort.npz).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the people split.")
@click.option(
    "--split",
    type=click.Choice(["all", "fit", "eval"]),
    default="all",
    show_default=True,
    help="Only people of this half (facestream.core.splits): `fit` leaves the `eval` half"
    " unseen, for `facestream simulate --split eval` and `eval store` to report on.",
)
@click.option(
    "--visitors/--no-visitors",
    "fit_visitors",
    default=True,
    show_default=True,
    help="Fit the visitor threshold on simulated visitor streams (else keep the default).",
)
@click.option(
    "--far-target",
    type=click.FloatRange(0.0, 0.5, min_open=True),
    default=None,
    help="Largest share of strangers taken for a member, per population, on the fit part"
    " [default: 0.005].",
)
@progress_option
@json_option
def calibrate_command(
    folders: tuple[Path, ...],
    out: Path,
    seed: int,
    split: str,
    fit_visitors: bool,
    far_target: float | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Fit the member and visitor thresholds with a cohort, report them on held-out people."""
    import time

    from facestream.core.calibration import FAR_TARGET, calibrate
    from facestream.core.evaluation import encode_subjects
    from facestream.core.photos import image_files
    from facestream.core.policy import save_policies

    started = time.perf_counter()
    from facestream.core.splits import person_split

    paths = [
        p
        for f in folders
        for d in sorted(f.iterdir())
        if d.is_dir() and split in ("all", person_split(d.name))
        for p in image_files(d)
    ]
    if not paths:
        fail("no photos found in the --images folders")
    encodings, encode_seconds = encode_subjects(paths, progress=show_progress(progress))
    try:
        result = calibrate(
            list(folders),
            encodings,
            seed=seed,
            fit_visitors=fit_visitors,
            far_target=FAR_TARGET if far_target is None else far_target,
        )
    except ValueError as exc:
        fail(str(exc))
    report = result.as_dict()
    report["photos"] = len(paths)
    report["split"] = split
    report["no_face"] = sum(e is None for e in encodings.values())
    report["encode_seconds"] = round(encode_seconds, 1)
    save_policies(out, result.policies, report)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["out"] = str(out)
    if as_json:
        emit(report)
        return
    member, visitor = report["member"], report["visitor"]
    lines = [
        f"member threshold {member['threshold']} (k={member['k']}; by rotation "
        f"{member['thresholds_by_rotation']}), visitor threshold {visitor['threshold']}"
        f"{'' if visitor['fitted'] else ' (default, not fitted)'}",
        f"shipped: cohort of rotation {report['shipped_rotation']} "
        f"({report['shipped_cohort_people']} people) with its threshold",
        "held out (mean ± std over rotations): FAR, identification, wrong person",
    ]
    for name, key in (("policy", "held_out"), ("euclidean 0.50/0.03", "baseline")):
        rows = report[key] if key == "held_out" else report[key]["held_out"]
        for pop, r in rows.items():
            cells = ", ".join(
                f"{r[f]['mean']:.2%} ± {r[f]['std']:.2%}"
                for f in ("false_accept", "identification", "wrong_person")
            )
            lines.append(f"  {name:20} {pop:16} {cells}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    lines.append(f"written to {out} in {report['total_seconds']} s")
    click.echo("\n".join(lines))
