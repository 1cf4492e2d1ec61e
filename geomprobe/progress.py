"""Progress of long steps, through one helper (tqdm underneath).

* On a terminal (stderr is a TTY): a tqdm bar with rate and ETA, removed when the step ends.
* Not a terminal (a pipe, a log file, a test run): no bars; a step started with ``lines=True`` (the
  few that take minutes, e.g. the covariance build) writes one start line and one end line.
* Quiet (``geomprobe --quiet``, :func:`set_quiet`, or ``GEOMPROBE_QUIET=1`` in the environment): nothing.

Library code uses it as::

    from geomprobe.progress import progress

    with progress(total=n, desc="value opt", unit="step") as bar:
        for ...:
            bar.update()
            bar.set(loss=f"{loss:.3f}")
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

_QUIET: bool | None = None  # set by set_quiet(); None: follow the environment


def _env_quiet() -> bool:
    return os.environ.get("GEOMPROBE_QUIET", "").strip().lower() not in ("", "0", "false", "no", "off")


def is_quiet() -> bool:
    """True under ``--quiet`` / :func:`set_quiet(True) <set_quiet>` / ``GEOMPROBE_QUIET=1``."""
    return _QUIET if _QUIET is not None else _env_quiet()


def set_quiet(quiet: bool | None) -> bool | None:
    """Silence (True) or allow (False) all progress output in this process; None: follow ``GEOMPROBE_QUIET``.
    Returns the previous setting, so callers can restore it."""
    global _QUIET
    previous, _QUIET = _QUIET, quiet
    return previous


def is_interactive() -> bool:
    """Bars are drawn only when not quiet and stderr is a terminal."""
    if is_quiet():
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def note(message: str) -> None:
    """One line on stderr unless quiet (e.g. announcing a first-run-only step)."""
    if not is_quiet():
        print(f"geomprobe: {message}", file=sys.stderr, flush=True)


class Progress:
    """A progress bar that degrades to start/end lines (``lines=True``) or to nothing."""

    def __init__(self, total: float | None = None, desc: str = "", unit: str = "it", *, initial: float = 0,
                 lines: bool = False, announce: str | None = None, enabled: bool = True, leave: bool = False):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._t0 = time.perf_counter()
        self._bar: Any = None
        self._lines = False
        self._closed = False
        if not enabled or is_quiet():
            return
        if is_interactive():
            from tqdm import tqdm

            if announce:
                tqdm.write(f"geomprobe: {announce}", file=sys.stderr)
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                             file=sys.stderr, unit_scale=unit in ("tok", "B"))
        elif lines:
            self._lines = True
            print(f"geomprobe: {announce or desc} ...", file=sys.stderr, flush=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set(self, **postfix: Any) -> None:
        """Extra fields on the bar (``loss=0.12``); ignored without a bar."""
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            done = f"{self.n:g}" + (f"/{self.total:g}" if self.total else "") + f" {self.unit}"
            print(f"geomprobe: {self.desc} done: {done} in {time.perf_counter() - self._t0:.1f} s",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> Progress:
    """A :class:`Progress`; use as a context manager.  ``lines=True`` for steps long enough to log
    start/end when stderr is not a terminal; ``announce=`` a sentence printed once before the bar."""
    return Progress(total, desc, unit, **kwargs)


def track(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
          **kwargs: Any) -> Iterator[T]:
    """Iterate with progress: ``for r in track(requests, "tolerance", unit="req")``."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()


@contextmanager
def quiet() -> Iterator[None]:
    """``with quiet():`` — no progress output inside."""
    previous = set_quiet(True)
    try:
        yield
    finally:
        set_quiet(previous)


__all__ = ["Progress", "is_interactive", "is_quiet", "note", "progress", "quiet", "set_quiet", "track"]
