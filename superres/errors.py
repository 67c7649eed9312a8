"""The one exception type users see.

Anything the user can fix (a bad file, a wrong option, a missing weights file) is raised as
``SuperresError`` with a one-line message that names the file or option and the problem. The CLI
prints it as ``superres: error: <message>`` on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations


class SuperresError(Exception):
    """A user-facing error with an actionable one-line message."""


def fail(message: str) -> "NoReturn":  # noqa: F821 - typing only
    """Raise :class:`SuperresError` with ``message``."""
    raise SuperresError(message)
