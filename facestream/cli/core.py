"""The recognition core on the command line, no pipeline needed: enroll, identify, verify,
serve and demo-core (``eval`` is in :mod:`.evaluation`). ``enroll --members`` is the exception:
it publishes to the pipeline's Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from facestream.cli.common import (
    emit,
    fail,
    hidden_alias,
    json_option,
    local_settings,
    pick,
    progress_option,
    show_progress,
)
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
verify_threshold_option = click.option(
    "--threshold",
    type=float,
    default=None,
    help="Largest Euclidean distance between the same person's faces [default: 0.61].",
)


def _load_gallery(path: Path, threshold: float | None, margin: float | None) -> Gallery:
    overrides = {k: v for k, v in (("threshold", threshold), ("margin", margin)) if v is not None}
    if not path.exists():
        fail(f"no gallery at {path}; create one with `facestream enroll DIR --gallery {path}`")
    try:
        return Gallery.load(path, **overrides)
    except GalleryError as exc:
        fail(str(exc))


@click.command()
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
@click.option(
    "--index",
    type=click.Choice(INDEX_TYPES),
    default="flat",
    show_default=True,
    help="Faiss index of a new gallery.",
)
@click.option(
    "--metric",
    type=click.Choice(["l2", "cosine"]),
    default="l2",
    show_default=True,
    help="Distance of a new gallery.",
)
@click.option(
    "--aggregate",
    type=click.Choice(["samples", "mean", "trimmed"]),
    default="samples",
    show_default=True,
    help="Index every photo, or one (trimmed) mean per person.",
)
@click.option("--workers", type=int, default=None, help="Encoding processes [default: cores].")
@progress_option
@json_option
def enroll(
    folder: Path | None,
    gallery_path: Path | None,
    members_dir: Path | None,
    index: str,
    metric: str,
    aggregate: str,
    workers: int | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Enroll every person in FOLDER (Name/*.jpg or ID_n.jpg) into the gallery file, or with
    --members DIR, into the pipeline (every matcher picks them up)."""
    from facestream.core.enrollment import enroll_folder, report_lines

    if members_dir is not None:
        from facestream.admin.members import publish_members
        from facestream.cli.admin import print_members_report

        published = publish_members(
            members_dir, local_settings(), workers=workers, progress=show_progress(progress)
        )
        print_members_report(published, as_json)
        return
    if folder is None or gallery_path is None:
        fail("give FOLDER and --gallery FILE, or --members DIR")
    if gallery_path.exists():
        gallery = _load_gallery(gallery_path, None, None)
    else:
        gallery = Gallery(GalleryConfig(index=index, metric=metric, aggregate=aggregate))  # type: ignore[arg-type]
    report = enroll_folder(folder, gallery, workers=workers, progress=show_progress(progress))
    gallery.save(gallery_path)
    summary = report.as_dict()
    summary["gallery"] = {
        "path": str(gallery_path),
        "identities": len(gallery),
        "samples": gallery.sample_count,
    }
    if as_json:
        emit(summary)
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


@click.command()
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
        fail(f"{image}: {exc.reason}: {exc.message}")
    if as_json:
        emit({"image": str(image), "faces": faces})
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


@click.command()
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@verify_threshold_option
@json_option
def verify(image_a: Path, image_b: Path, threshold: float | None, as_json: bool) -> None:
    """Say whether the main faces of IMAGE_A and IMAGE_B are the same person (1:1)."""
    from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD, verify_images

    try:
        result = verify_images(image_a, image_b, threshold or DEFAULT_VERIFY_THRESHOLD).as_dict()
    except ImageError as exc:
        fail(f"{exc.reason}: {exc.message}")
    if as_json:
        emit(result)
        return
    if result["distance"] is None:
        click.echo(f"cannot verify: {result['reason']}")
        return
    verdict = "same person" if result["same"] else "different people"
    click.echo(f"{verdict}: distance {result['distance']} (threshold {result['threshold']})")


@click.command()
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
@progress_option
def serve(
    gallery_path: Path | None,
    enroll_dir: Path | None,
    host: str | None,
    port: int | None,
    progress: bool | None,
) -> None:
    """Serve the HTTP face API and the store dashboard.

    The API key comes from $FACESTREAM_API_KEY; the dashboard reads the sink's Redis
    ($FACESTREAM_REDIS_URL, $FACESTREAM_REDIS_PREFIX) with the sink's store time zones
    ($FACESTREAM_SINK_STORE_TIMEZONES)."""
    import os

    from pydantic import ValidationError

    from facestream.core.enrollment import enroll_folder
    from facestream.runtime.environment import UnknownVariable, check_environment
    from facestream.services.api.server import open_gallery
    from facestream.services.api.server import serve as serve_api
    from facestream.services.api.settings import ApiSettings
    from facestream.services.sink.reader import StoreReader
    from facestream.services.sink.settings import SinkSettings

    if gallery_path is None and enroll_dir is None:
        fail("give --gallery FILE, --enroll DIR, or both")
    try:
        check_environment(os.environ, [ApiSettings, SinkSettings])
        settings = ApiSettings(gallery_path=gallery_path) if gallery_path else ApiSettings()
        stores = StoreReader(local_settings(), SinkSettings())
    except UnknownVariable as exc:
        fail(f"invalid settings: {exc}")
    except ValidationError as exc:
        fail(f"invalid settings:\n{exc}")
    try:
        gallery = open_gallery(settings)
    except GalleryError as exc:
        fail(str(exc))
    if enroll_dir is not None:
        report = enroll_folder(enroll_dir, gallery, progress=show_progress(progress))
        click.echo(f"enrolled {report.identities} identities: {dict(report.counts)}", err=True)
        if gallery_path is not None:
            gallery.save(gallery_path)
    serve_api(settings, gallery, host, port, stores=stores)


@click.command("demo-core")
@click.option(
    "--member-count", type=click.IntRange(1), default=25, show_default=True, help="People enrolled."
)
@click.option(
    "--stranger-count",
    type=click.IntRange(0),
    default=15,
    show_default=True,
    help="People never enrolled, shown as probes.",
)
# `--members` means a folder of members everywhere else; these counts had the short names.
@hidden_alias("--members", "members_alias", type=click.IntRange(1), default=None)
@hidden_alias("--strangers", "strangers_alias", type=click.IntRange(0), default=None)
@progress_option
def demo_core(
    member_count: int,
    stranger_count: int,
    members_alias: int | None,
    strangers_alias: int | None,
    progress: bool | None,
) -> None:
    """Enroll sample people, then identify members, strangers and group photos.

    Photos come from $FACESTREAM_DATASETS (default ../shared/datasets)."""
    from facestream.tools import demo as demo_module

    members = pick(member_count, members_alias)
    strangers = pick(stranger_count, strangers_alias)
    root = datasets_root()
    if not (root / "lfw-fold1" / "images").is_dir():
        fail(f"no sample photos at {root}; set {DATASETS_ENV} to the datasets folder")
    outcomes = demo_module.run(
        root, click.echo, members=members, strangers=strangers, progress=show_progress(progress)
    )
    if not all(o.correct for o in outcomes):
        # The demo is also a smoke test: a wrong answer on this clean set is a regression.
        raise SystemExit(1)
