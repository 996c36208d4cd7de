"""How a message names a setting: as the running front end says it.

Python's API and the notebooks' parameters say field names (`batch_size`, `overwrite=True`); the
command line says flags (`--batch-size`, `--overwrite`). Messages are built with `setting` and
`how_to_set` wherever they are raised, and the command line runs its commands inside
`settings_said_as_flags`, so a value a user typed is never rewritten after the fact.
"""
from __future__ import annotations

import contextlib
import contextvars

_AS_FLAGS = contextvars.ContextVar("cifar_hw2_settings_as_flags", default=False)


def flag_of(name: str) -> str:
    """A field's command-line flag: batch_size → --batch-size."""
    return "--" + name.replace("_", "-")


def as_flags() -> bool:
    """Whether messages raised now name settings as flags (inside `settings_said_as_flags`)."""
    return _AS_FLAGS.get()


def setting(name: str) -> str:
    """`name` as the running front end says it: "batch_size", or "--batch-size" on the command line."""
    return flag_of(name) if as_flags() else name


def how_to_set(name: str, value) -> str:
    """Setting `name` to `value`, as the running front end writes it: "overwrite=True", "out='runs/x'";
    on the command line "--overwrite", "--no-tf32", "--out runs/x"."""
    if not as_flags():
        return f"{name}={value!r}"
    if isinstance(value, bool):
        return flag_of(name) if value else "--no-" + flag_of(name)[2:]
    return f"{flag_of(name)} {value}"


def none_word() -> str:
    """The value "no limit" / "choose for me" as the front end writes it: None, or 'none' on the command line."""
    return "'none'" if as_flags() else "None"


@contextlib.contextmanager
def settings_said_as_flags(on: bool = True):
    """Messages raised inside name settings as flags (the command line's commands run inside;
    a Slurm job enters it again with the choice recorded where it was submitted)."""
    token = _AS_FLAGS.set(on)
    try:
        yield
    finally:
        _AS_FLAGS.reset(token)
