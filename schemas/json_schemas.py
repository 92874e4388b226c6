"""JSON Schemas of the message contracts, generated from the models, for consumers in any language.

``schemas/json/`` holds this module's output, one file per message version, kept in the
repository so that an integrator in Node, Java or Go validates records without Python;
``tests/schemas`` fails when the files drift from the models. Regenerate them with
``facestream schemas`` (``--check`` only compares).

The schemas describe the messages as producers write them, which is stricter than what the
models accept: every field is present (``model_dump_json`` writes defaults too), unknown fields
are refused, and an encoding is exactly the 684 characters of its wire form. What JSON Schema
cannot say (an encoding holds no NaN; an identity record's ``learned_from`` lines up with its
``encodings``) stays with :func:`facestream.schemas.decode`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from facestream.schemas.messages import (
    CameraProgress,
    CameraProgressV1,
    DeadLetter,
    FaceObservation,
    FrameMeta,
    IdentityRecord,
    IdentityRecordV1,
    MatchEvent,
    MemberRecord,
    MemberSamples,
)
from facestream.schemas.wire import DIM, Vector, _to_wire

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
DIRECTORY: Final = Path(__file__).resolve().parent / "json"
"""Where the files live in a source checkout (``schemas/json``; the package links to it)."""

# base64 of DIM float32 (4 bytes each): 512 bytes make 170 groups of three and one of two, so
# 683 characters and one "=" of padding.
_WIRE_CHARS: Final = (DIM * 4 + 2) // 3 * 4
_VECTOR: Final[dict[str, Any]] = {
    "type": "string",
    "description": f"A face encoding: base64 of {DIM} little-endian float32 ({DIM * 4} bytes).",
    "contentEncoding": "base64",
    "minLength": _WIRE_CHARS,
    "maxLength": _WIRE_CHARS,
    "pattern": f"^[A-Za-z0-9+/]{{{_WIRE_CHARS - 1}}}=$",
}


@dataclass(frozen=True)
class Contract:
    """One message version and where it travels."""

    model: type[BaseModel]
    version: int
    where: str
    """The topics and part of the record that carry it, for the schema's description."""
    headers: bool = False
    """Carried as Kafka headers (every value a UTF-8 string), not as a JSON value."""
    optional: tuple[str, ...] = ()
    """Fields added within the version: absent from records written before them (not
    required). The model's ``ADDED_WITHIN_VERSION`` are added to these."""

    @property
    def not_required(self) -> frozenset[str]:
        """``optional`` and the model's ``ADDED_WITHIN_VERSION``."""
        return frozenset({*self.optional, *getattr(self.model, "ADDED_WITHIN_VERSION", ())})

    @property
    def name(self) -> str:
        return self.model.__name__.removesuffix(f"V{self.version}")

    @property
    def file_name(self) -> str:
        return f"{self.name}.v{self.version}.schema.json"


CONTRACTS: Final = (
    Contract(FrameMeta, 1, "the headers of a frames.v1 record", headers=True),
    Contract(FaceObservation, 1, "the value of an encodings.v1 record"),
    Contract(
        CameraProgress,
        2,
        "the value of an encodings.v1 record with the header facestream-kind: progress; the "
        "topic may also hold version 1 records",
    ),
    Contract(
        CameraProgressV1,
        1,
        "the value of an encodings.v1 record with the header facestream-kind: progress, "
        "written by detectors of 3-4 Dec 2026 (still read)",
    ),
    Contract(MatchEvent, 1, "the value of a matches.v1 record"),
    Contract(MemberRecord, 1, "the value of a members.v1 record (null: a tombstone)"),
    Contract(MemberSamples, 1, "the value of a member-samples.v1 record (null: a tombstone)"),
    Contract(
        IdentityRecord,
        2,
        "the value of an identities.v1 record (null: a tombstone); the topic also holds "
        "version 1 records",
        optional=("last_seen",),
    ),
    Contract(
        IdentityRecordV1,
        1,
        "the value of an identities.v1 record written before visitors learned (still read)",
    ),
    Contract(DeadLetter, 1, "the value of a <topic>.dlq record"),
)


def _vector_fields(model: type[BaseModel]) -> dict[str, bool]:
    """The fields of ``model`` that hold encodings: name -> whether it is a list of them."""
    found: dict[str, bool] = {}
    for name, field in model.model_fields.items():
        if field.annotation is str and any(
            getattr(m, "func", None) is _to_wire for m in field.metadata
        ):
            found[name] = False
        elif field.annotation == list[Vector]:
            found[name] = True
    return found


def _as_produced(schema: dict[str, Any]) -> None:
    """Every property required (producers write them all), property titles dropped (they only
    repeat the name), descriptions in plain Markdown; nested models too."""
    if "description" in schema:
        schema["description"] = _plain(schema["description"])
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema["required"] = list(properties)
        for prop in properties.values():
            prop.pop("title", None)
    for nested in schema.get("$defs", {}).values():
        _as_produced(nested)


def _as_headers(properties: dict[str, Any]) -> None:
    """Headers are strings: the version a constant string, a time an RFC 3339 string."""
    for name, prop in properties.items():
        if "const" in prop:
            properties[name] = {"const": str(prop["const"])}
        else:
            prop["type"] = "string"


def _plain(docstring: str) -> str:
    """A model's docstring for readers of any language: Markdown code spans, no Sphinx roles."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", docstring).replace("``", "`")


def json_schema(contract: Contract) -> dict[str, Any]:
    """The JSON Schema of one contract, as written to ``schemas/json``."""
    generated = contract.model.model_json_schema(mode="serialization")
    _as_produced(generated)
    properties: dict[str, Any] = generated["properties"]
    for name, is_list in _vector_fields(contract.model).items():
        if is_list:
            properties[name]["items"] = dict(_VECTOR)
        else:
            properties[name] = dict(_VECTOR)
    if contract.headers:
        _as_headers(properties)
    generated["required"] = [n for n in generated["required"] if n not in contract.not_required]
    head = {
        "$schema": DIALECT,
        "$id": f"urn:facestream:schema:{contract.name}:v{contract.version}",
        "title": f"{contract.name} version {contract.version}",
        "description": f"{generated.pop('description', '')}\n\nCarried in {contract.where}. "
        "Generated from facestream.schemas; documented in docs/events.md.",
    }
    generated.pop("title", None)
    return {**head, **generated}


def documents() -> dict[str, str]:
    """File name -> content of every schema file. Keys keep the models' field order, so that a
    file reads like the message's table in docs/events.md."""
    return {c.file_name: json.dumps(json_schema(c), indent=2) + "\n" for c in CONTRACTS}


def write(directory: Path = DIRECTORY) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drift(directory: Path = DIRECTORY) -> list[str]:
    """The schema files in ``directory`` that differ from the models, are missing or are not
    generated from any model (empty: up to date)."""
    expected = documents()
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from the model")
    for path in sorted(directory.glob("*.schema.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: no model generates it")
    return problems
