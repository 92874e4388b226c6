"""``python -m facestream.services.sink``: run the sink, configured by ``FACESTREAM_*`` and
``FACESTREAM_SINK_*``."""

from facestream.services.sink.cli import sink_command

if __name__ == "__main__":
    sink_command(prog_name="python -m facestream.services.sink")
