"""``python -m facestream.services.camera``: publish frames (see :mod:`.cli`)."""

import logging
import sys

from facestream.services.camera.cli import camera_command

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    camera_command(prog_name="python -m facestream.services.camera")
