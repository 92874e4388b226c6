"""``python -m facestream.services.detector``: the detector stage (see :mod:`.cli`)."""

from facestream.services.detector.cli import detector_command, limit_threads

if __name__ == "__main__":
    limit_threads()
    detector_command(prog_name="python -m facestream.services.detector")
