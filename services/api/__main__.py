"""``python -m services.api``: run the face service, configured by ``FACESTREAM_API_*``."""

from services.api.server import main

if __name__ == "__main__":
    main()
