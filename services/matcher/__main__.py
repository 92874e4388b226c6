"""``python -m services.matcher``: run the matcher worker (see :mod:`services.matcher.cli`)."""

from services.matcher.cli import matcher_command

if __name__ == "__main__":
    matcher_command()
