"""The ``facestream`` command line: enroll, identify, verify, evaluate, serve, demo."""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

import click

from facestream.core.datasets import DATASETS_ENV, datasets_root
from facestream.core.gallery import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    INDEX_TYPES,
    Gallery,
    GalleryConfig,
    GalleryError,
)
from facestream.core.images import ImageError
from facestream.runtime.logs import configure_logging
from facestream.runtime.settings import PipelineSettings


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, default=str))


def _fail(message: str) -> None:
    raise click.ClickException(message)


# The pipeline's commands live with their services; they are imported only when run, so that
# `facestream verify` does not load Kafka and Redis clients.
LAZY_COMMANDS = {
    "detector": "facestream.services.detector.cli:detector_command",
    "matcher": "facestream.services.matcher.cli:matcher_command",
    "sink": "facestream.services.sink.cli:sink_command",
    "camera": "facestream.services.camera.cli:camera_command",
    "stats": "facestream.services.sink.stats:stats_command",
    "erase": "facestream.cli.admin:erase_command",
    "crm-example": "facestream.tools.crm_example:crm_example_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.option("--log-level", default="WARNING", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """facestream: face recognition for retail stores."""
    configure_logging(log_level)


gallery_option = click.option(
    "--gallery",
    "gallery_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Gallery file (created by enroll).",
)
threshold_option = click.option(
    "--threshold",
    type=float,
    default=None,
    help=f"Largest Euclidean distance that matches [default: the gallery's, {DEFAULT_THRESHOLD}].",
)
margin_option = click.option(
    "--margin",
    type=float,
    default=None,
    help=f"Required lead over the nearest other identity [default: {DEFAULT_MARGIN}].",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _load_gallery(path: Path, threshold: float | None, margin: float | None) -> Gallery:
    overrides = {k: v for k, v in (("threshold", threshold), ("margin", margin)) if v is not None}
    if not path.exists():
        _fail(f"no gallery at {path}; create one with `facestream enroll DIR --gallery {path}`")
    try:
        return Gallery.load(path, **overrides)
    except GalleryError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


@main.command()
@click.argument(
    "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False
)
@click.option(
    "--gallery",
    "gallery_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Gallery file to enroll into (created if missing).",
)
@click.option(
    "--members",
    "members_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Publish these people to the pipeline's members.v1 topic instead.",
)
@click.option("--index", type=click.Choice(INDEX_TYPES), default="flat", show_default=True)
@click.option("--metric", type=click.Choice(["l2", "cosine"]), default="l2", show_default=True)
@click.option(
    "--aggregate",
    type=click.Choice(["samples", "mean", "trimmed"]),
    default="samples",
    show_default=True,
    help="Index every photo, or one (trimmed) mean per person.",
)
@click.option("--workers", type=int, default=None, help="Encoding processes [default: cores].")
@json_option
def enroll(
    folder: Path | None,
    gallery_path: Path | None,
    members_dir: Path | None,
    index: str,
    metric: str,
    aggregate: str,
    workers: int | None,
    as_json: bool,
) -> None:
    """Enroll every person in FOLDER (Name/*.jpg or ID_n.jpg) into the gallery file, or with
    --members DIR, into the pipeline (every matcher picks them up)."""
    from facestream.core.enrollment import enroll_folder, report_lines

    if members_dir is not None:
        from facestream.admin.members import publish_members
        from facestream.cli.admin import print_members_report

        published = publish_members(members_dir, _local_settings(), workers=workers, progress=True)
        print_members_report(published, as_json)
        return
    if folder is None or gallery_path is None:
        _fail("give FOLDER and --gallery FILE, or --members DIR")
    assert folder is not None and gallery_path is not None
    if gallery_path.exists():
        gallery = _load_gallery(gallery_path, None, None)
    else:
        gallery = Gallery(GalleryConfig(index=index, metric=metric, aggregate=aggregate))  # type: ignore[arg-type]
    report = enroll_folder(folder, gallery, workers=workers, progress=not as_json)
    gallery.save(gallery_path)
    summary = report.as_dict()
    summary["gallery"] = {
        "path": str(gallery_path),
        "identities": len(gallery),
        "samples": gallery.sample_count,
    }
    if as_json:
        _emit(summary)
        return
    for line in report_lines(summary):
        click.echo(line)
    click.echo(f"gallery {gallery_path}: {len(gallery)} identities, {gallery.sample_count} samples")


def _faces_report(gallery: Gallery, image: Path | bytes) -> list[dict[str, Any]]:
    from facestream.core.engine import FaceEngine

    faces = FaceEngine().faces_in(image)
    vectors = [f.encoding for f in faces if f.encoding is not None]
    decisions = iter(gallery.identify_batch(vectors) if vectors else [])
    out = []
    for f in faces:
        entry = f.as_dict()
        entry["decision"] = next(decisions).as_dict() if f.encoding is not None else None
        out.append(entry)
    return out


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@gallery_option
@threshold_option
@margin_option
@json_option
def identify(
    image: Path, gallery_path: Path, threshold: float | None, margin: float | None, as_json: bool
) -> None:
    """Find every face in IMAGE and say who each is, or unknown."""
    gallery = _load_gallery(gallery_path, threshold, margin)
    try:
        faces = _faces_report(gallery, image)
    except ImageError as exc:
        _fail(f"{image}: {exc.reason}: {exc.message}")
    if as_json:
        _emit({"image": str(image), "faces": faces})
        return
    if not faces:
        click.echo(f"{image}: no face found")
    for f in faces:
        b, d = f["box"], f["decision"]
        where = f"box top={b['top']} right={b['right']} bottom={b['bottom']} left={b['left']}"
        if d is None:
            click.echo(f"{where}: not matched, quality {','.join(f['quality']['reasons'])}")
            continue
        who = d["identity"]["id"] if d["identity"] else "unknown"
        click.echo(f"{where}: {who}  distance={d['distance']} margin={d['margin']} ({d['reason']})")


verify_threshold_option = click.option(
    "--threshold",
    type=float,
    default=None,
    help="Largest Euclidean distance between the same person's faces [default: 0.62].",
)


@main.command()
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@verify_threshold_option
@json_option
def verify(image_a: Path, image_b: Path, threshold: float | None, as_json: bool) -> None:
    """Say whether the main faces of IMAGE_A and IMAGE_B are the same person (1:1)."""
    from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD, verify_images

    try:
        result = verify_images(image_a, image_b, threshold or DEFAULT_VERIFY_THRESHOLD)
    except ImageError as exc:
        _fail(f"{exc.reason}: {exc.message}")
    if as_json:
        _emit(result)
        return
    if result["distance"] is None:
        click.echo(f"cannot verify: {result['reason']}")
        return
    verdict = "same person" if result["same"] else "different people"
    click.echo(f"{verdict}: distance {result['distance']} (threshold {result['threshold']})")


@main.group("eval")
def eval_group() -> None:
    """Measure accuracy on labelled photos."""


@eval_group.command("verify")
@click.option(
    "--pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@verify_threshold_option
@json_option
def eval_verify(pairs: Path, images: Path, threshold: float | None, as_json: bool) -> None:
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
        _fail(str(exc))
    paths = [p.a for p in pair_list] + [p.b for p in pair_list]
    encodings, seconds = encode_subjects(paths, progress=not as_json)
    report = verify_report(pair_list, encodings, threshold or DEFAULT_VERIFY_THRESHOLD, seconds)
    if as_json:
        _emit(report)
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
        f"no face found: {report['no_face']} image(s) {report['no_face_images']}\n"
        f"seconds: {report['seconds']}"
    )


@eval_group.command("identify")
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--index", type=click.Choice(INDEX_TYPES), default="flat", show_default=True)
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
@json_option
def eval_identify(
    images: Path,
    index: str,
    threshold: float | None,
    margin: float | None,
    stranger_share: float,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Open-set 1:N identification on a folder-per-person tree."""
    from facestream.core.evaluation import encode_subjects, identify_report, split_people

    split = split_people(images, stranger_share)
    paths = [*split.enrolled.values(), *(p for p, _ in split.member_probes), *split.stranger_probes]
    encodings, seconds = encode_subjects(paths, progress=not as_json)
    config = GalleryConfig(
        index=index,  # type: ignore[arg-type]
        threshold=threshold or DEFAULT_THRESHOLD,
        margin=DEFAULT_MARGIN if margin is None else margin,
    )
    report = identify_report(split, encodings, config, seconds, plot)
    if as_json:
        _emit(report)
        return
    click.echo(
        f"probes {report['probes']} ({report['member_probes']} of enrolled people, "
        f"{report['stranger_probes']} of strangers, {report['no_face']} without a face); "
        f"gallery {report['gallery_identities']} identities ({index})\n"
        f"rank-1 accuracy: {report['rank1']:.2%}\n"
        f"at threshold {report['threshold']}, margin {report['margin']}:\n"
        f"  identification rate {report['identification_rate']:.2%}\n"
        f"  false accept rate (strangers accepted) {report['false_accept_rate']:.2%}\n"
        f"  false reject rate (members rejected) {report['false_reject_rate']:.2%}\n"
        f"  misidentification rate {report['misidentification_rate']:.2%}\n"
        f"seconds: {report['seconds']}" + (f"\nplot: {plot}" if plot else "")
    )


@main.command()
@click.option(
    "--gallery",
    "gallery_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Gallery file to serve (and to persist enrollments and erasures to).",
)
@click.option(
    "--enroll",
    "enroll_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Enroll this folder before serving.",
)
@click.option("--host", default=None, help="Listen address [default: 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: 8000].")
def serve(
    gallery_path: Path | None, enroll_dir: Path | None, host: str | None, port: int | None
) -> None:
    """Serve the HTTP face API. The API key comes from $FACESTREAM_API_KEY."""
    from pydantic import ValidationError

    from facestream.core.enrollment import enroll_folder
    from facestream.services.api.server import open_gallery
    from facestream.services.api.server import serve as serve_api
    from facestream.services.api.settings import ApiSettings

    if gallery_path is None and enroll_dir is None:
        _fail("give --gallery FILE, --enroll DIR, or both")
    try:
        settings = ApiSettings(gallery_path=gallery_path) if gallery_path else ApiSettings()
    except ValidationError as exc:
        _fail(f"invalid settings:\n{exc}")
    try:
        gallery = open_gallery(settings)
    except GalleryError as exc:
        _fail(str(exc))
    if enroll_dir is not None:
        report = enroll_folder(enroll_dir, gallery, progress=True)
        click.echo(f"enrolled {report.identities} identities: {dict(report.counts)}", err=True)
        if gallery_path is not None:
            gallery.save(gallery_path)
    serve_api(settings, gallery, host, port)


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def stack(args: tuple[str, ...]) -> None:
    """Local Kafka and Redis without Docker: up | down | status [--json]."""
    from facestream.devstack.stack import main as stack_main

    raise SystemExit(stack_main(list(args)))


@main.command()
@click.option("--store", required=True, help="Store id of the frames.")
@click.option(
    "--members",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of members to enroll first (Name/*.jpg).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV path,captured_at,camera (paths relative to the manifest).",
)
@click.option("--timezone", default="UTC", show_default=True, help="The store's time zone.")
@click.option("--quiet", is_flag=True, help="Do not print match events as they arrive.")
@json_option
def replay(
    store: str, members: Path | None, manifest: Path, timezone: str, quiet: bool, as_json: bool
) -> None:
    """Run a whole replay: stack, workers, members, frames; print the day's stats."""
    from facestream.tools import replay as replay_module

    stats = replay_module.run(
        store=store,
        members=members,
        manifest=manifest,
        settings=_local_settings(),
        timezone=timezone,
        echo=lambda line: click.echo(line, err=as_json),
        show_events=not quiet,
    )
    if as_json:
        _emit(stats)
        return
    click.echo(_stats_table(stats))


def _local_settings(**overrides: str) -> PipelineSettings:
    """Pipeline settings for commands that run the local stack: unless Kafka and Redis are named
    explicitly (FACESTREAM_KAFKA_BOOTSTRAP, FACESTREAM_REDIS_URL), the ones `facestream stack`
    runs, on the ports it is configured with."""
    from facestream.devstack import stack

    cfg = stack.StackConfig.from_env()
    local = {
        "kafka_bootstrap": stack.kafka_bootstrap(cfg),
        "redis_url": stack.redis_url(cfg),
    }
    explicit = {
        "kafka_bootstrap": "FACESTREAM_KAFKA_BOOTSTRAP",
        "redis_url": "FACESTREAM_REDIS_URL",
    }
    defaults = {k: v for k, v in local.items() if explicit[k] not in os.environ}
    return PipelineSettings(**{**defaults, **overrides})  # type: ignore[arg-type]


def _stats_table(stats: dict[str, Any], truth: dict[str, Any] | None = None) -> str:
    keys = ("pv", "uv", "new", "returning", "members", "dwell_seconds_avg")
    lines = [f"store {stats['store']} on {stats['date']}"]
    for k in keys:
        got = stats.get(k)
        if truth is None:
            lines.append(f"  {k:<18} {got}")
        else:
            mark = "ok" if got == truth.get(k) else "DIFFERENT"
            lines.append(f"  {k:<18} {got!s:<40} truth {truth.get(k)!s:<40} {mark}")
    return "\n".join(lines)


@main.command()
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the simulated frames [default: a temporary folder].",
)
def demo(work: Path | None) -> None:
    """The main job: a simulated store day replayed through the whole pipeline, with truth.

    Members, returning strangers and new strangers pass two cameras of one store over two
    days ($FACESTREAM_DATASETS photos); the day's stats are printed beside the known truth."""
    import tempfile

    from facestream.tools import replay as replay_module
    from facestream.tools import simulate

    root = datasets_root()
    if not (root / "lfw-fold1" / "images").is_dir():
        _fail(f"no sample photos at {root}; set {DATASETS_ENV} to the datasets folder")
    with tempfile.TemporaryDirectory(prefix="facestream-demo-") as tmp:
        folder = work or Path(tmp)
        scenario = simulate.build(root, folder)
        truth = scenario.truth()
        click.echo(
            f"simulated store {scenario.store} ({scenario.timezone}): "
            f"{len(scenario.appearances)} frames over two days, two cameras"
        )
        # A fresh topic prefix per run: the demo's numbers are its own, whatever ran before.
        tag = f"demo-{os.getpid()}-{int(time.time())}"
        settings = _local_settings(topic_prefix=f"{tag}.", group_prefix=tag, redis_prefix=tag)
        stats = replay_module.run(
            store=scenario.store,
            members=scenario.members_dir,
            manifest=scenario.manifest,
            settings=settings,
            timezone=scenario.timezone,
            echo=click.echo,
        )
    click.echo(_stats_table(stats, truth))
    keys = ("pv", "uv", "new", "returning", "members", "dwell_seconds_avg")
    if any(stats.get(k) != truth.get(k) for k in keys):
        raise SystemExit(1)


@main.command("demo-core")
@click.option("--members", type=int, default=25, show_default=True)
@click.option("--strangers", type=int, default=15, show_default=True)
def demo_core(members: int, strangers: int) -> None:
    """Enroll sample people, then identify members, strangers and group photos.

    Photos come from $FACESTREAM_DATASETS (default ../shared/datasets)."""
    from facestream.tools import demo as demo_module

    root = datasets_root()
    if not (root / "lfw-fold1" / "images").is_dir():
        _fail(f"no sample photos at {root}; set {DATASETS_ENV} to the datasets folder")
    outcomes = demo_module.run(root, click.echo, members=members, strangers=strangers)
    if not all(o.correct for o in outcomes):
        # The demo is also a smoke test: a wrong answer on this clean set is a regression.
        raise SystemExit(1)


if __name__ == "__main__":
    main()
