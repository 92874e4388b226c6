"""The ``facestream`` command line: the :func:`main` group, with every command registered lazily.

Each command lives with what it runs, and its module is imported only when that command runs
(or ``--help`` lists it), so that ``facestream verify`` does not load Kafka and Redis clients:

* :mod:`.core` -- enroll, identify, verify, serve, demo-core; :mod:`.evaluation` -- eval;
* :mod:`.pipeline` -- replay, demo; :mod:`.simulation` -- simulate, walkby, eval store;
* :mod:`.stack` -- stack up|down|status; :mod:`.contracts` -- schemas (the JSON Schemas);
* :mod:`.admin` -- erase (and the report of ``enroll --members``);
* the services' own commands (detector, matcher, sink, camera, stats) and the example CRM.
"""

from __future__ import annotations

import importlib

import click

from facestream.runtime.logs import configure_logging

#: Command name -> ``module:attribute`` of its click command.
LAZY_COMMANDS = {
    "enroll": "facestream.cli.core:enroll",
    "identify": "facestream.cli.core:identify",
    "verify": "facestream.cli.core:verify",
    "eval": "facestream.cli.evaluation:eval_group",
    "calibrate": "facestream.cli.calibration:calibrate_command",
    "serve": "facestream.cli.core:serve",
    "demo-core": "facestream.cli.core:demo_core",
    "replay": "facestream.cli.pipeline:replay",
    "simulate": "facestream.cli.simulation:simulate",
    "walkby": "facestream.cli.simulation:walkby_command",
    "demo": "facestream.cli.pipeline:demo",
    "stack": "facestream.cli.stack:stack_group",
    "schemas": "facestream.cli.contracts:schemas_command",
    "erase": "facestream.cli.admin:erase_command",
    "audit": "facestream.cli.admin:audit_command",
    "snapshot": "facestream.cli.admin:snapshot_command",
    "detector": "facestream.services.detector.cli:detector_command",
    "matcher": "facestream.services.matcher.cli:matcher_command",
    "sink": "facestream.services.sink.cli:sink_command",
    "camera": "facestream.services.camera.cli:camera_command",
    "stats": "facestream.services.sink.stats:stats_command",
    "crm-example": "facestream.tools.crm_example:crm_example_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`LAZY_COMMANDS` when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group("facestream", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facestream", prog_name="facestream")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    help="Python log level (log lines go to stderr).",
)
def main(log_level: str) -> None:
    """facestream: face recognition for retail stores.

    Every command prints its result on stdout (one JSON object with --json) and its progress
    and commentary on stderr."""
    configure_logging(log_level)


if __name__ == "__main__":
    main()
