"""The camera: publishes frames (folder, manifest, video or stream) to ``frames.v1``."""
