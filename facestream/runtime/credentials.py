"""Secrets the clients need (a SASL or Redis password), from a variable or a mounted file.

A Kubernetes Secret reaches a container either as an environment variable (``secretKeyRef``) or
as a file in a mounted volume; the file is the better of the two (it is not in the process
environment, ``/proc/<pid>/environ`` or a crash dump of it, and a rotated Secret is read again
at the next start). So each password setting has a ``..._FILE`` twin, and exactly one of them
may be set.

The value itself is never logged: settings hold it as :class:`~pydantic.SecretStr`, and what is
handed to a client library is a :class:`Unlogged` string, whose ``repr`` is masked. kafka-python's
admin client logs its whole configuration at DEBUG (``%s`` of a dict: the ``repr`` of each
value), which would otherwise print the password.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

MASK = "**********"


class Unlogged(str):
    """A string whose ``repr`` is masked: what a client library gets as a password. ``str()``
    and every string operation give the real value; only a debug print of it is hidden."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


def read_secret_file(path: Path, name: str) -> str:
    """The secret in ``path``, without the line break a file usually ends with (``kubectl create
    secret --from-file`` keeps one). ValueError naming the variable ``name`` when unreadable or
    empty: a setting, not the client, is what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ValueError(f"{name}: {path} is empty")
    return value


def pick_secret(value: SecretStr | None, file: Path | None, name: str) -> Unlogged | None:
    """The secret given by ``value`` (variable ``name``) or by ``file`` (``name``_FILE), or None
    when neither is set; ValueError when both are (which one was meant is not ours to guess)."""
    if value is not None and file is not None:
        raise ValueError(f"set {name} or {name}_FILE, not both")
    if file is not None:
        return Unlogged(read_secret_file(file, f"{name}_FILE"))
    if value is not None:
        return Unlogged(value.get_secret_value())
    return None
