"""Errors that reach a user: one line naming the problem and the fix.

The CLI prints ``str(error)`` and exits non-zero; no traceback.  Library callers can catch
:class:`GeomprobeError` (or a subclass) to tell bad input from bugs.
"""

from __future__ import annotations


class GeomprobeError(Exception):
    """Base class: a user-facing problem with a one-line message that names the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line


class ModelLoadError(GeomprobeError):
    """The model cannot be loaded or its architecture is not supported as configured."""


class ArchSpecError(ModelLoadError):
    """An ArchSpec entry does not match the loaded model (validated by a probe forward)."""


class ChecksumError(ModelLoadError):
    """A downloaded or cached model file does not have the expected sha256."""


class SubjectNotFoundError(GeomprobeError):
    """A subject string does not occur in its prompt."""


class RequestFormatError(GeomprobeError):
    """A request file is unreadable or malformed."""


class NumericalError(GeomprobeError):
    """A matrix is singular, ill-posed or holds non-finite values."""


class CacheMismatchError(GeomprobeError):
    """A cache on disk belongs to another model, layer, corpus or dtype."""
