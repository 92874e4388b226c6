"""``python -m facestream.services.api``: the face service, configured by ``FACESTREAM_API_*``."""

from facestream.services.api.server import main

if __name__ == "__main__":
    main()
