"""The one wire form of a face encoding, and the one decode boundary for every message.

An encoding travels as base64 of 128 little-endian float32 (684 characters). Every message is
JSON of a frozen pydantic model with ``extra="forbid"`` and a schema version ``v``; whatever
arrives from Kafka goes through :func:`decode`, which turns every way a message can be wrong
into one :class:`SchemaError` with a stable ``reason``, for the dead-letter record.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, ClassVar, Final, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

DIM: Final = 128
_WIRE_DTYPE: Final = np.dtype("<f4")


class SchemaError(ValueError):
    """A message that does not fit its contract. ``reason`` is a stable code:
    ``not_json``, ``unknown_version``, ``invalid`` (wrong fields or values), ``bad_encoding``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def vector_to_wire(vector: NDArray[Any]) -> str:
    """Base64 of 128 little-endian float32 values. Refuses NaN, infinities, wrong shapes."""
    arr = np.asarray(vector, dtype=_WIRE_DTYPE)
    if arr.shape != (DIM,):
        raise SchemaError("bad_encoding", f"an encoding has {DIM} values, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise SchemaError("bad_encoding", "the encoding contains NaN or infinite values")
    return base64.b64encode(arr.tobytes()).decode("ascii")


def vector_from_wire(text: str) -> NDArray[np.float32]:
    """The inverse of :func:`vector_to_wire`, with the same checks."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SchemaError("bad_encoding", f"the encoding is not base64: {exc}") from exc
    if len(raw) != DIM * 4:
        raise SchemaError("bad_encoding", f"an encoding is {DIM * 4} bytes, got {len(raw)}")
    arr = np.frombuffer(raw, dtype=_WIRE_DTYPE).astype(np.float32)
    if not np.isfinite(arr).all():
        raise SchemaError("bad_encoding", "the encoding contains NaN or infinite values")
    return arr


# dlib's encodings are not unit vectors: on the shared photos (LFW, multi-face: 490 faces with
# the mirror average, 160 without) their L2 norm ranged 1.24-1.69, median 1.41. A message
# encoding outside these bounds (a third below, half above) did not come from the model: a
# vector of 1e30s, or of zeros, would sit at distance 0 or infinity from everything.
MIN_NORM: Final = 0.8
MAX_NORM: Final = 2.5


def check_norm(vector: NDArray[np.float32]) -> None:
    """Refuse an encoding whose L2 norm no dlib encoding has (``bad_encoding``)."""
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not MIN_NORM <= norm <= MAX_NORM:
        raise SchemaError(
            "bad_encoding",
            f"the encoding's norm is {norm:.4g}; a face encoding's is {MIN_NORM}-{MAX_NORM}",
        )


def _to_wire(value: Any) -> str:
    if isinstance(value, str):
        check_norm(vector_from_wire(value))  # the text itself is already the wire form
        return value
    text = vector_to_wire(value)
    check_norm(vector_from_wire(text))
    return text


# A field type: the wire form, validated (128 finite values, a plausible norm). Built from an
# ndarray or from the wire text; read back with vector_from_wire. Kept as text so that messages
# stay hashable and comparable.
Vector = Annotated[str, BeforeValidator(_to_wire)]


class Message(BaseModel):
    """Base of every message: immutable, no unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    VERSION: ClassVar[int] = 1
    ADDED_WITHIN_VERSION: ClassVar[frozenset[str]] = frozenset()
    """Optional fields added after their version was published: left out of the JSON when
    unset, so that a record without them is exactly what readers from before them accept."""

    def to_bytes(self) -> bytes:
        unset = {name for name in self.ADDED_WITHIN_VERSION if getattr(self, name) is None}
        return self.model_dump_json(exclude=unset or None).encode()


M = TypeVar("M", bound=Message)


def decode(model: type[M], value: bytes | None) -> M:
    """Parse a Kafka value into ``model``; every failure is a :class:`SchemaError`."""
    if value is None:
        raise SchemaError("invalid", "the message has no value")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError("not_json", f"the value is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError("invalid", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if version != model.VERSION:
        raise SchemaError(
            "unknown_version",
            f"{model.__name__} version {version!r} is not understood (expected {model.VERSION})",
        )
    try:
        return model.model_validate(data)
    except SchemaError:
        raise
    except ValidationError as exc:
        bad = exc.errors()[0]
        ctx = bad.get("ctx", {})
        inner = ctx.get("error") if isinstance(ctx, dict) else None
        if isinstance(inner, SchemaError):
            raise SchemaError(inner.reason, inner.message) from exc
        where = ".".join(str(p) for p in bad["loc"])
        raise SchemaError("invalid", f"{where}: {bad['msg']}") from exc


Old = TypeVar("Old", bound=Message)


def decode_either(model: type[M], older: type[Old], value: bytes | None) -> M | Old:
    """Parse ``value`` as ``model``, or, when it is of another version, as ``older`` (the
    version before, still read). Every failure is a :class:`SchemaError`; a version neither
    understands is ``unknown_version`` naming both."""
    try:
        return decode(model, value)
    except SchemaError as exc:
        if exc.reason != "unknown_version":
            raise
        newer = exc
    try:
        return decode(older, value)
    except SchemaError as exc:
        if exc.reason == "unknown_version":
            raise SchemaError("unknown_version", f"{newer.message}, or {older.VERSION}") from exc
        raise
