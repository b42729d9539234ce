"""The progress of ``fit`` on stderr, in the form where a person reads it, the training loss with it:

    a terminal            tqdm's bar (redrawn at most every ``REDRAW_S`` s), a line per epoch above it
    a Jupyter notebook    tqdm's notebook bar (needs ipywidgets; else the terminal bar, which Jupyter
                          draws too), a line per epoch
    a file or a pipe      (``2> log``, ``| tee``, nohup) a line per epoch, and one every ``LINE_S`` s
                          within an epoch that takes longer, so a long run is never silent

``fit(progress=False)`` prints nothing.  The bar is drawn at the cadence ``fit`` sets: ``tick()``
says when a redraw (or a line) is due, and only then does ``fit`` read the loss back from the device
and call ``draw``.  Without tqdm installed there is no bar: the lines of a file or a pipe instead.
"""
from __future__ import annotations

import sys
import time

REDRAW_S = 0.1      # seconds between redraws of a bar
LINE_S = 5.0        # seconds between progress lines within an epoch, where there is no bar


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's kernel app), where stderr is not a terminal but a
    notebook cell shows a widget."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _notebook_bar(total):
    """tqdm's notebook widget, or None when it cannot be drawn (no ipywidgets: tqdm raises)."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm
        return notebook_tqdm(total=total, leave=False, unit="step")
    except Exception:
        return None


class Progress:
    """Progress over ``total`` steps (see the module doc); ``enabled`` False shows nothing,
    None or True the form for ``stream`` (stderr by default).  ``mode`` says which: 'bar',
    'notebook', 'lines' or 'off'."""

    def __init__(self, total, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = True if enabled is None else bool(enabled)
        self.total, self.done = total, 0
        self.start = self.last = time.perf_counter()
        self.bar, self.mode = None, "off"
        if not self.enabled:
            return
        self.mode = "lines"
        try:
            from tqdm import tqdm
        except ImportError:              # no bar: lines, wherever the output goes
            return
        if stream is None and not self.tty and in_notebook():
            self.bar = _notebook_bar(total)
            if self.bar is not None:
                self.mode = "notebook"
                return
            self.tty = True              # Jupyter draws tqdm's text bar in place (it reads the \r)
        if self.tty:
            self.bar = tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True, unit="step",
                            mininterval=0, miniters=1, smoothing=0.1)
            self.mode = "bar"

    def tick(self) -> bool:
        """Count one step; True if a redraw (or a progress line) is due: then read the loss and call ``draw``."""
        self.done += 1
        if self.mode == "off":
            return False
        now = time.perf_counter()
        every = LINE_S if self.bar is None else REDRAW_S
        if now - self.last < every and (self.done < self.total or self.bar is None):
            return False
        self.last = now
        return True

    def draw(self, text):
        """Redraw the bar at the steps counted so far with ``text`` (the epoch and its loss), or, with
        no bar, write it as a line with the step count and the time so far."""
        if self.mode == "off":
            return
        if self.bar is None:
            self._line(f"{text} (step {self.done:,}/{self.total:,}, {time.perf_counter() - self.start:.0f}s)")
            return
        self.bar.n = self.done
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def epoch_done(self, epoch, epochs, hist):
        if self.mode == "off":
            return
        line = f"epoch {epoch}/{epochs}: loss {hist.loss[-1]:.4f}"
        if hist.test_accuracy:
            line += f", test loss {hist.test_loss[-1]:.4f}, test accuracy {100 * hist.test_accuracy[-1]:.2f}%"
        line += f" ({hist.seconds[-1]:.2f}s)"
        self.last = time.perf_counter()  # the next line within an epoch comes LINE_S after this one
        if self.bar is not None:
            self.bar.write(line, file=self.stream)     # above the bar, which stays at the bottom
        else:
            self._line(line)

    def _line(self, line):
        self.stream.write(line + "\n")
        self.stream.flush()              # a pipe or a file shows it now, not when a buffer fills

    def close(self):
        if self.bar is not None:
            self.bar.close()
