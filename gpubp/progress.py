"""The progress of ``fit`` on stderr: a tqdm bar with the training loss while
stderr is a terminal, and one summary line per epoch.

The bar is drawn by tqdm (the ecosystem's progress bar), at the cadence ``fit``
sets: ``tick()`` says when a redraw is due (at most every ``REDRAW_S`` seconds,
and at the last step), and only then does ``fit`` read the loss back from the
device and call ``draw``.  Without tqdm installed there is no bar, only the
epoch lines.
"""
from __future__ import annotations

import sys
import time

REDRAW_S = 0.1


class Progress:
    """Progress over ``total`` steps: a bar (a terminal and tqdm needed) and a line per epoch."""

    def __init__(self, total, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = self.tty if enabled is None else bool(enabled)
        self.total, self.done, self.last = total, 0, 0.0
        self.bar = None
        if self.enabled and self.tty:
            try:
                from tqdm import tqdm
            except ImportError:          # no bar; the epoch lines still come
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True, unit="step",
                                mininterval=0, miniters=1, smoothing=0.1)

    def tick(self) -> bool:
        """Count one step; True if the bar is due a redraw (then read the loss and call ``draw``)."""
        self.done += 1
        if self.bar is None:
            return False
        now = time.perf_counter()
        if now - self.last < REDRAW_S and self.done < self.total:
            return False
        self.last = now
        return True

    def draw(self, text):
        """Redraw the bar at the steps counted so far, with ``text`` (the epoch and its loss)."""
        if self.bar is None:
            return
        self.bar.n = self.done
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def epoch_done(self, epoch, epochs, hist):
        if not self.enabled:
            return
        line = f"epoch {epoch}/{epochs}: loss {hist.loss[-1]:.4f}"
        if hist.test_accuracy:
            line += f", test loss {hist.test_loss[-1]:.4f}, test accuracy {100 * hist.test_accuracy[-1]:.2f}%"
        line += f" ({hist.seconds[-1]:.2f}s)"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)     # above the bar, which stays at the bottom
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
