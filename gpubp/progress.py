"""The progress of ``fit``: a one-line bar on stderr, or a line per epoch."""
from __future__ import annotations

import sys
import time


class Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second),
    or one summary line per epoch when stderr is not a terminal."""

    def __init__(self, total, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = self.tty if enabled is None else bool(enabled)
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), 0.0

    def tick(self) -> bool:
        """Count one step; True if the bar is due a redraw (then call ``draw``)."""
        self.done += 1
        if not (self.enabled and self.tty):
            return False
        now = time.perf_counter()
        if now - self.last < 0.1 and self.done < self.total:
            return False
        self.last = now
        return True

    def draw(self, text):
        now = time.perf_counter()
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r[{bar:<30}] {100 * frac:5.1f}% {text} {now - self.t0:6.1f}s")
        self.stream.flush()

    def epoch_done(self, epoch, epochs, hist):
        if not self.enabled:
            return
        line = f"epoch {epoch}/{epochs}: loss {hist.loss[-1]:.4f}"
        if hist.test_accuracy:
            line += f", test loss {hist.test_loss[-1]:.4f}, test accuracy {100 * hist.test_accuracy[-1]:.2f}%"
        line += f" ({hist.seconds[-1]:.2f}s)"
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
