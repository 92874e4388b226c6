"""facestream: face recognition for retail stores, on Apache Kafka.

One import root, layered from the bottom up (CONTRIBUTING.md; tests/test_layers.py enforces it):

* :mod:`facestream.schemas` -- message contracts and the keys that place them on topics;
* :mod:`facestream.core` -- the recognition core (images, engine, gallery, enrollment,
  verification, evaluation) and :mod:`facestream.runtime` -- the one Kafka worker runtime;
* :mod:`facestream.services` -- camera, detector, matcher, sink and the HTTP API;
* :mod:`facestream.admin` (members, erasure) and :mod:`facestream.devstack` (local Kafka + Redis);
* :mod:`facestream.tools` (replay, simulator, demo, example CRM) and :mod:`facestream.cli`.

A module imports only from its own layer's package and the layers below it.
"""
