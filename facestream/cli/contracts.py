"""``facestream schemas``: write (or check) the JSON Schemas of the message contracts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facestream.cli.common import emit, json_option
from facestream.schemas import json_schemas


@click.command("schemas")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=json_schemas.DIRECTORY,
    show_default=True,
    help="Folder of the schema files.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the files drifted.")
@json_option
def schemas_command(out: Path, check: bool, as_json: bool) -> None:
    """The JSON Schema of every message, generated from the models (docs/events.md)."""
    if check:
        problems = json_schemas.drift(out)
        if as_json:
            emit({"directory": str(out), "up_to_date": not problems, "problems": problems})
        else:
            for line in problems:
                click.echo(line)
            click.echo(f"{out}: {'drifted' if problems else 'up to date'}", err=True)
        if problems:
            sys.exit(1)
        return
    written = json_schemas.write(out)
    if as_json:
        emit({"directory": str(out), "written": [p.name for p in written]})
        return
    for path in written:
        click.echo(path)
