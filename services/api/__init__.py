"""The HTTP face service: FastAPI app (:mod:`.app`), settings (:mod:`.settings`) and runner
(:mod:`.server`). Imports nothing heavy, so ``python -m facestream.services.api`` starts fast."""
