"""``facestream eval verify|identify|passes``: accuracy of the recognition core on labelled photos,
and of the video pass code on a labelled video."""

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


@eval_group.command("passes")
@click.option(
    "--video",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A camera's video file.",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV with the header person,enter,leave: one line per time someone crossed the view, "
    "times in seconds (or m:ss) from the video's start.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0.1, max=60),
    default=5.0,
    show_default=True,
    help="Frames read per second of video, as `facestream camera --video --fps` would send.",
)
@json_option
def eval_passes(video: Path, truth: Path, fps: float, as_json: bool) -> None:
    """How a video's people become passes (one observation each) with the detector's video
    code and the FACESTREAM_DETECTOR_* settings in force, against a hand-written truth: passes
    found, missed and split, stray observations, and whether a returning person's passes are
    nearest each other."""
    from facestream.core.detection import DetectorSettings
    from facestream.services.camera.publisher import CameraError
    from facestream.tools.pass_eval import TruthError, evaluate, read_truth

    try:
        passes = read_truth(truth)
        report = evaluate(video, passes, fps=fps, settings=DetectorSettings()).as_dict()
    except (TruthError, CameraError) as exc:
        fail(str(exc))
    if as_json:
        emit(report)
        return
    reid = report["reidentification"]
    click.echo(
        f"{report['video']}: {report['frames']} frames at {fps:g}/s, "
        f"{report['ms_per_frame']:.0f} ms a frame, {report['encoded']} faces encoded"
    )
    click.echo(
        f"truth passes {report['truth_passes']}, observations {report['observations']}: "
        f"found {report['found']} (one each: {report['one_to_one']}), missed "
        f"{report['missed']}, split into {report['split']} extra, stray {report['stray']}"
    )
    if reid["returning_passes"]:
        click.echo(
            f"returning passes {reid['returning_passes']}: nearest earlier pass is the same "
            f"person's for {reid['nearest_is_same_person']}; mean distance same person "
            f"{reid['same_person_mean']}, different people {reid['other_person_mean']}"
        )
    for p in report["passes"]:
        click.echo(
            f"  {p['person']:>16} {p['enter']:8.1f}-{p['leave']:<8.1f} "
            f"{len(p['observations'])} observation(s)"
        )
