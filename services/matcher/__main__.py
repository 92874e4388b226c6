"""``python -m facestream.services.matcher``: the matcher worker (see :mod:`.cli`)."""

from facestream.services.matcher.cli import matcher_command

if __name__ == "__main__":
    matcher_command(prog_name="python -m facestream.services.matcher")
