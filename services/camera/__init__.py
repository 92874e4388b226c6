"""The camera: publishes frames (folder, manifest, video or stream) to ``frames.v1``, or with
``--detect`` the observations of the faces it finds in them to ``encodings.v1``."""
