"""``facestream eval verify|identify``: accuracy of the recognition core on labelled photos."""

from __future__ import annotations

from pathlib import Path

import click

from facestream.cli.common import emit, fail, json_option, progress_option, show_progress
from facestream.cli.core import margin_option, threshold_option, verify_threshold_option
from facestream.core.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD, INDEX_TYPES, GalleryConfig


@click.group("eval")
def eval_group() -> None:
    """Measure accuracy on labelled photos, and counting on a simulated chain."""


def _register_store() -> None:
    # `eval store` runs the whole pipeline; it lives with the simulator's commands.
    from facestream.cli.simulation import eval_store

    eval_group.add_command(eval_store)


_register_store()


@eval_group.command("verify")
@click.option(
    "--pairs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="An official-format pairs.txt.",
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Photos in the LFW layout (one folder per person).",
)
@verify_threshold_option
@progress_option
@json_option
def eval_verify(
    pairs: Path, images: Path, threshold: float | None, progress: bool | None, as_json: bool
) -> None:
    """The LFW pairs protocol on an official-format pairs.txt."""
    from facestream.core.evaluation import (
        PairsFormatError,
        encode_subjects,
        read_pairs,
        verify_report,
    )
    from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD

    try:
        pair_list = read_pairs(pairs, images)
    except PairsFormatError as exc:
        fail(str(exc))
    paths = [p.a for p in pair_list] + [p.b for p in pair_list]
    encodings, seconds = encode_subjects(paths, progress=show_progress(progress))
    report = verify_report(pair_list, encodings, threshold or DEFAULT_VERIFY_THRESHOLD, seconds)
    if as_json:
        emit(report)
        return
    cv = (
        "n/a (one fold)"
        if report["accuracy_cv"] is None
        else (f"{report['accuracy_cv']:.2%} ± {report['accuracy_cv_std']:.2%}")
    )
    click.echo(
        f"pairs {report['pairs']} in {report['folds']} fold(s), images {report['images']}\n"
        f"accuracy at threshold {report['threshold']}: {report['accuracy']:.2%}\n"
        f"best threshold {report['best_threshold']}: {report['best_accuracy']:.2%}\n"
        f"cross-validated accuracy: {cv}\n"
        + "".join(
            f"held out by people: threshold {r['threshold']} fitted on the {r['fit_on']} half "
            f"({r['fit_pairs']} pairs), {r['accuracy']:.2%} on the {r['reported_on']} half "
            f"({r['pairs']} pairs)\n"
            for r in report["held_out"]
        )
        + f"no face found: {report['no_face']} image(s) {report['no_face_images']}\n"
        f"seconds: {report['seconds']}"
    )


@eval_group.command("identify")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Photos in the LFW layout (one folder per person).",
)
@click.option(
    "--index",
    type=click.Choice(INDEX_TYPES),
    default="flat",
    show_default=True,
    help="Faiss index of the gallery.",
)
@threshold_option
@margin_option
@click.option(
    "--stranger-share",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of multi-photo people kept out of the gallery as strangers.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG of both error rates against the threshold.",
)
@click.option(
    "--policy",
    "policy_folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A `facestream calibrate` folder: decide with its member policy and cohort instead of "
    "the threshold and margin (those rates are then reported under `euclidean`).",
)
@progress_option
@json_option
def eval_identify(
    images: Path,
    index: str,
    threshold: float | None,
    margin: float | None,
    stranger_share: float,
    plot: Path | None,
    policy_folder: Path | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Open-set 1:N identification on a folder-per-person tree."""
    from facestream.core.evaluation import encode_subjects, identify_report, split_people
    from facestream.core.policy import load_policies

    try:
        policies = load_policies(policy_folder) if policy_folder is not None else None
    except ValueError as exc:
        fail(str(exc))
    split = split_people(images, stranger_share)
    paths = [*split.enrolled.values(), *(p for p, _ in split.member_probes), *split.stranger_probes]
    encodings, seconds = encode_subjects(paths, progress=show_progress(progress))
    config = GalleryConfig(
        index=index,  # type: ignore[arg-type]
        threshold=threshold or DEFAULT_THRESHOLD,
        margin=DEFAULT_MARGIN if margin is None else margin,
    )
    report = identify_report(split, encodings, config, seconds, plot, policies)
    if policy_folder is not None:
        report["policy"]["folder"] = str(policy_folder)
    if as_json:
        emit(report)
        return
    if policy_folder is not None:
        p = report["policy"]
        decided_by = f"policy {policy_folder} (normalised threshold {p['threshold']}, k={p['k']})"
        if p["people_in_cohort"]:
            click.echo(
                f"warning: {p['people_in_cohort']} of these people are in the policy's cohort; "
                "their strangers' false accept rate is optimistic",
                err=True,
            )
    else:
        decided_by = f"threshold {report['threshold']}, margin {report['margin']}"
    click.echo(
        f"probes {report['probes']} ({report['member_probes']} of enrolled people, "
        f"{report['stranger_probes']} of strangers, {report['no_face']} without a face); "
        f"gallery {report['gallery_identities']} identities ({index})\n"
        f"rank-1 accuracy: {report['rank1']:.2%}\n"
        f"at {decided_by}:\n"
        f"  identification rate {report['identification_rate']:.2%}\n"
        f"  false accept rate (strangers accepted) {report['false_accept_rate']:.2%}\n"
        f"  false reject rate (members rejected) {report['false_reject_rate']:.2%}\n"
        f"  misidentification rate {report['misidentification_rate']:.2%}\n"
        f"seconds: {report['seconds']}" + (f"\nplot: {plot}" if plot else "")
    )
    if "euclidean" in report:
        e = report["euclidean"]
        click.echo(
            f"for comparison, threshold {report['threshold']} margin {report['margin']}: "
            f"identification {e['identification_rate']:.2%}, "
            f"false accept {e['false_accept_rate']:.2%}"
        )
