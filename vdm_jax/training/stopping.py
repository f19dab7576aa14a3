"""How a training run stops: on a signal, and when a checkpoint cannot be saved.

* ``SIGTERM`` (a scheduler's preemption notice) sets a flag: the loop saves at the next step
  boundary and exits cleanly. ``SIGINT`` interrupts (``KeyboardInterrupt``).
* While the main thread waits on a checkpoint save (orbax waits for the previous save inside
  ``save`` and at the end of the run), ``SIGINT`` or a second signal raise :class:`RunInterrupted`
  at once, and ``SIGTERM`` does after a grace period (``SAVE_WAIT_GRACE_S``) that a healthy save
  uses to complete: a save that hangs (a dead filesystem, a failed background write) never keeps
  the process from stopping.
* A save that fails is fatal at once: :class:`CheckpointSaveError`, one line with the path and the
  errno. The directory is probed before each save (a small file written, synced and removed), so
  an unwritable or full ``checkpoints/`` is reported before orbax starts its background threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (one line: step, path, errno)."""


class RunInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an Exception
    """SIGTERM/SIGINT arrived while the run waited on a checkpoint save."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received while waiting on a checkpoint save: "
                         "stopped without waiting for it")


# How long a wait on a checkpoint save may go on after SIGTERM before the run stops without it.
SAVE_WAIT_GRACE_S = 10.0


class StopSignals:
    """SIGTERM: stop at the next step boundary (after saving). During a wait on a save, SIGTERM
    allows the save ``SAVE_WAIT_GRACE_S`` more seconds (a healthy save completes and the run stops
    as usual), then raises :class:`RunInterrupted`; SIGINT, or a second signal, raises at once."""

    def __init__(self):
        self.requested = threading.Event()
        self._waiting = False
        self._installed = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                self._previous[sig] = signal.signal(sig, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        self._installed = False

    def _handle(self, signum, frame) -> None:
        del frame
        if signum == signal.SIGALRM:  # the grace period of a wait ran out
            if self._waiting:
                raise RunInterrupted(signal.SIGTERM)
            return
        if self._waiting:
            if signum == signal.SIGINT or self.requested.is_set():
                raise RunInterrupted(signum)
            self.requested.set()
            self._arm()
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested.set()

    def _arm(self) -> None:
        if self._installed:
            signal.setitimer(signal.ITIMER_REAL, SAVE_WAIT_GRACE_S)

    @contextlib.contextmanager
    def waiting(self):
        """A wait on a checkpoint save: signals stop it (see the class docstring)."""
        previous, self._waiting = self._waiting, True
        if self.requested.is_set():
            self._arm()
        try:
            yield
        finally:
            self._waiting = previous
            if self._installed and not previous:
                signal.setitimer(signal.ITIMER_REAL, 0)


def check_writable(directory: str) -> None:
    """Write, sync and remove a small file in ``directory``; :class:`CheckpointSaveError` if not."""
    probe = os.path.join(directory, f".write_probe.{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise CheckpointSaveError(
            f"cannot write checkpoints to {directory}: {describe_os_error(e)}") from None


def describe_os_error(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"[Errno {e.errno}] {e.strerror or e}{where}" if e.errno else f"{type(e).__name__}: {e}{where}"


def save_error(step: int, directory: str, error: BaseException) -> CheckpointSaveError:
    """The one-line error of a failed save of ``step`` into ``directory``."""
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, OSError) and e.errno:
            return CheckpointSaveError(f"checkpoint step {step} could not be saved to {directory}: "
                                       f"{describe_os_error(e)}")
        e = e.__cause__ or e.__context__
    text = " ".join(str(error).split())[:300]
    return CheckpointSaveError(f"checkpoint step {step} could not be saved to {directory}: "
                               f"{type(error).__name__}: {text}")
