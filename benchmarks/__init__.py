"""Benchmarks of the matcher (1:N search) and the detector (decode, detect, encode).

Run them as modules from the project root, for example ``python -m benchmarks.search``;
their results and the commands that regenerate them are in ``docs/benchmarks.md``.
"""
