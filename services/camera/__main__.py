"""``python -m facestream.services.camera``: publish frames (see :mod:`.cli`)."""

from facestream.runtime.logs import configure_logging
from facestream.services.camera.cli import camera_command

if __name__ == "__main__":
    configure_logging("INFO")
    camera_command(prog_name="python -m facestream.services.camera")
