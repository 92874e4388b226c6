"""The command line end to end on real photos: enroll (both layouts), identify, verify, eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from facestream.cli import main
from facestream.core.enrollment import scan


@pytest.fixture(scope="module")
def folder(lfw: Path, multi: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two people in the LFW layout, one in the flat ID_n layout, and three bad photos."""
    root = tmp_path_factory.mktemp("people")
    for name in ("Gray_Davis", "Jennifer_Garner"):
        (root / name).mkdir()
        for p in sorted((lfw / name).glob("*.jpg"))[:3]:
            shutil.copy(p, root / name / p.name)
    shutil.copy(multi / "obama.jpg", root / "0042_1.jpg")
    shutil.copy(multi / "obama-240p.jpg", root / "0042_2.jpg")
    shutil.copy(multi / "two_people.jpg", root / "0043_1.jpg")  # two similar faces
    (root / "0044_1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    wall = root / "0045_1.png"
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(wall)
    return root


def test_scan_both_layouts(folder: Path) -> None:
    ids = {(p.identity_id, p.path.name) for p in scan(folder)}
    assert ("Gray_Davis", "Gray_Davis_0001.jpg") in ids
    assert ("0042", "0042_2.jpg") in ids and ("0043", "0043_1.jpg") in ids


@pytest.fixture(scope="module")
def gallery_file(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("g") / "gallery.npz"
    result = CliRunner().invoke(main, ["enroll", str(folder), "--gallery", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return path, json.loads(result.output)


def test_enroll_reports_every_photo(gallery_file: tuple[Path, dict[str, Any]]) -> None:
    path, report = gallery_file
    assert path.exists()
    assert report["photos"] == 11
    assert report["counts"] == {"bad_image": 1, "enrolled": 8, "no_face": 1, "several_faces": 1}
    assert report["gallery"]["identities"] == 3 and report["gallery"]["samples"] == 8
    skipped = {Path(s["path"]).name: s["status"] for s in report["skipped"]}
    assert skipped == {
        "0043_1.jpg": "several_faces",
        "0044_1.jpg": "bad_image",
        "0045_1.png": "no_face",
    }


def test_identify_member_and_unknown(
    gallery_file: tuple[Path, dict[str, Any]], lfw: Path, multi: Path
) -> None:
    path, _ = gallery_file
    runner = CliRunner()
    probe = sorted((lfw / "Gray_Davis").glob("*.jpg"))[5]
    out = runner.invoke(main, ["identify", str(probe), "--gallery", str(path), "--json"])
    assert out.exit_code == 0, out.output
    faces = json.loads(out.output)["faces"]
    assert faces[0]["decision"]["identity"]["id"] == "Gray_Davis"
    out = runner.invoke(
        main, ["identify", str(multi / "biden.jpg"), "--gallery", str(path), "--json"]
    )
    assert json.loads(out.output)["faces"][0]["decision"]["identity"] is None
    out = runner.invoke(main, ["identify", str(multi / "obama-1080p.jpg"), "--gallery", str(path)])
    assert "0042" in out.output and "match" in out.output


def test_identify_every_face_of_a_group(
    gallery_file: tuple[Path, dict[str, Any]], multi: Path
) -> None:
    path, _ = gallery_file
    out = CliRunner().invoke(
        main, ["identify", str(multi / "obama_and_biden.jpg"), "--gallery", str(path), "--json"]
    )
    faces = json.loads(out.output)["faces"]
    assert len(faces) == 3
    ids = [f["decision"]["identity"]["id"] if f["decision"]["identity"] else None for f in faces]
    assert ids.count("0042") == 1  # Obama is enrolled as 0042; Biden and the third face are not


def test_identify_bad_image_is_a_clear_error(
    gallery_file: tuple[Path, dict[str, Any]], folder: Path
) -> None:
    path, _ = gallery_file
    out = CliRunner().invoke(main, ["identify", str(folder / "0044_1.jpg"), "--gallery", str(path)])
    assert out.exit_code == 1
    assert "not_an_image" in out.output


def test_identify_without_gallery(multi: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main, ["identify", str(multi / "obama.jpg"), "--gallery", str(tmp_path / "none.npz")]
    )
    assert out.exit_code == 1 and "no gallery" in out.output


def test_verify(multi: Path) -> None:
    runner = CliRunner()
    same = runner.invoke(
        main, ["verify", str(multi / "obama.jpg"), str(multi / "obama-1080p.jpg"), "--json"]
    )
    assert json.loads(same.output)["same"] is True
    diff = runner.invoke(
        main, ["verify", str(multi / "obama.jpg"), str(multi / "biden.jpg"), "--json"]
    )
    assert json.loads(diff.output)["same"] is False
    group = runner.invoke(
        main, ["verify", str(multi / "two_people.jpg"), str(multi / "biden.jpg"), "--json"]
    )
    assert json.loads(group.output)["reason"] == "no_single_subject_in_a"


def test_eval_verify_cli_json(lfw: Path, tmp_path: Path) -> None:
    """The CLI on a small official-format file (the full fold runs in test_evaluation)."""
    lines = (lfw.parent / "pairs.txt").read_text().splitlines()
    (tmp_path / "pairs.txt").write_text("\n".join(["10", *lines[1:11], *lines[301:311]]) + "\n")
    out = CliRunner().invoke(
        main,
        ["eval", "verify", "--pairs", str(tmp_path / "pairs.txt"), "--images", str(lfw), "--json"],
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    for key in (
        "pairs",
        "accuracy",
        "accuracy_cv",
        "threshold",
        "best_threshold",
        "no_face",
        "seconds",
    ):
        assert key in report
    assert report["pairs"] == 20 and report["accuracy"] >= 0.9 and report["accuracy_cv"] is None


def test_eval_identify_cli_json(lfw: Path, tmp_path: Path) -> None:
    small = tmp_path / "people"
    small.mkdir()
    for d in sorted(lfw.iterdir())[:25]:
        (small / d.name).symlink_to(d)
    out = CliRunner().invoke(
        main,
        ["eval", "identify", "--images", str(small), "--json", "--plot", str(tmp_path / "r.png")],
    )
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    for key in (
        "probes",
        "rank1",
        "false_accept_rate",
        "false_reject_rate",
        "threshold",
        "seconds",
    ):
        assert key in report
    assert report["probes"] > 0 and (tmp_path / "r.png").exists()
