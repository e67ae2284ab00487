"""The toolkit's exceptions: one root, and one class for everything a user can get wrong.

``ReramError`` is the root of every exception the toolkit raises on purpose. ``UserError`` (also a
``ValueError``, so ``except ValueError`` in users' scripts keeps working) is bad input: a
configuration value, a table file, a GLUE file, a model checkpoint, a mapping that does not fit,
a protection request that conflicts. The CLI turns a ``UserError`` into one ``error:`` line and
exit status 2; any other exception is a bug and shows its traceback (``--debug`` shows the
traceback of user errors too).

Each layer keeps its specific class next to the code that raises it (``ConfigError`` in
:mod:`device.config`, ``TableError`` in :mod:`device.tables`, ``MappingError`` in
:mod:`mapping.plan`, ``GlueDataError`` in :mod:`nn.glue`, ...); all derive from ``UserError``.
"""

from __future__ import annotations

__all__ = ["ReramError", "UserError", "InputError"]


class ReramError(Exception):
    """Root of every exception the toolkit raises deliberately (aihwkit's ``AihwkitException`` idea)."""


class UserError(ReramError, ValueError):
    """Bad input from the user: the message says what was wrong and what is allowed."""


class InputError(UserError):
    """A tensor, array or file argument has the wrong shape, dtype, device or values."""
