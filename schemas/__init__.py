"""Message contracts of the facestream pipeline: versioned, frozen, validated at one boundary."""

from facestream.schemas.messages import (
    UNSTATED_MODEL_VERSION,
    Box,
    CameraProgress,
    CameraProgressV1,
    DeadLetter,
    FaceObservation,
    FrameMeta,
    IdentityRecord,
    MatchEvent,
    MemberRecord,
    MemberSamples,
    derived_id,
    payload_field,
)
from facestream.schemas.wire import Message, SchemaError, decode, vector_from_wire, vector_to_wire

__all__ = [
    "UNSTATED_MODEL_VERSION",
    "Box",
    "CameraProgress",
    "CameraProgressV1",
    "DeadLetter",
    "FaceObservation",
    "FrameMeta",
    "IdentityRecord",
    "MatchEvent",
    "MemberRecord",
    "MemberSamples",
    "Message",
    "SchemaError",
    "decode",
    "derived_id",
    "payload_field",
    "vector_from_wire",
    "vector_to_wire",
]
