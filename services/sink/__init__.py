"""The sink: match events → visits, PV/UV, new/returning, dwell and history in Redis.

Settings (:mod:`.settings`), the Redis model and erasure (:mod:`.store`, script in
:mod:`.script`), the stage (:mod:`.worker`), reading statistics (:mod:`.stats`) and the entry
point (:mod:`.cli`). Imports nothing at package level, so ``python -m
facestream.services.sink`` starts
fast.
"""
