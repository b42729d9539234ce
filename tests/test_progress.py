"""fit's progress wherever it is read: lines with the loss when stderr is a pipe or a file, tqdm's
notebook bar in Jupyter, the terminal bar in a terminal, nothing with progress=False."""
import io
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from gpubp import progress
from gpubp.mlp import History
from gpubp.progress import Progress

SCRIPT = """
import sys, numpy as np
import gpubp, gpubp.progress
gpubp.progress.LINE_S = float(sys.argv[2])
rng = np.random.default_rng(0)
X, y = rng.random((60, 4)), rng.integers(0, 2, 60)
net = gpubp.MLP([4, 3, 2], backend="numpy", seed=0)
kw = {} if sys.argv[1] == "default" else {"progress": sys.argv[1] == "True"}
hist = net.fit(X, y, epochs=3, batch_size=10, lr=0.5, **kw)
print(" ".join(f"{v:.4f}" for v in hist.loss))
"""


def fit_in_a_child(progress_arg, line_s=5.0):
    """Run a fit in a fresh Python whose stderr is a pipe (not a terminal), as under nohup or `| tee`."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, progress_arg, str(line_s)], capture_output=True,
                          text=True, timeout=120, check=True)
    return proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("arg", ["default", "True"])
def test_a_piped_stderr_gets_one_line_per_epoch_with_the_loss(arg):
    losses, err = fit_in_a_child(arg)
    lines = err.splitlines()
    assert len(lines) == 3, err
    for epoch, (line, loss) in enumerate(zip(lines, losses), start=1):
        m = re.fullmatch(rf"epoch {epoch}/3: loss (\d\.\d{{4}}) \(\d+\.\d\ds\)", line)
        assert m, line
        assert m.group(1) == loss                       # the epoch's loss, as History has it
    assert "\r" not in err and "it/s" not in err and "step/s" not in err    # no bar drawn into a pipe


def test_a_piped_stderr_gets_lines_within_a_long_epoch():
    # LINE_S = 0: every step is "a few seconds" later, so each gets a line (with the loss read back)
    losses, err = fit_in_a_child("default", line_s=0.0)
    within = [line for line in err.splitlines() if "(step " in line]
    assert len(within) == 3 * 6                         # 60 rows / batch 10 = 6 steps an epoch, 3 epochs
    first = re.fullmatch(r"epoch 1/3 loss (\d\.\d{4}) \(step 1/18, \d+s\)", within[0])
    assert first, within[0]
    last = re.fullmatch(r"epoch 3/3 loss (\d\.\d{4}) \(step 18/18, \d+s\)", within[-1])
    assert last and last.group(1) == losses[-1], within[-1]     # the epoch's running mean, at its end


def test_progress_false_is_silent():
    losses, err = fit_in_a_child("False", line_s=0.0)
    assert err == "" and len(losses) == 3


def test_a_file_gets_lines_and_a_terminal_the_bar():
    class TTY(io.StringIO):
        def isatty(self):
            return True
    log, tty = io.StringIO(), TTY()
    assert Progress(4, stream=log).mode == "lines"
    assert Progress(4, stream=tty).mode == "bar"
    assert Progress(4, enabled=False, stream=tty).mode == "off"


def _fake_ipython(monkeypatch, config):
    shell = types.SimpleNamespace(config=config)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_in_notebook_reads_the_ipython_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, {"TerminalInteractiveShell": {}})      # IPython in a terminal: not a notebook
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, {"IPKernelApp": {"connection_file": "kernel.json"}})
    assert progress.in_notebook()


def test_jupyter_gets_tqdms_notebook_bar(monkeypatch, capsys):
    _fake_ipython(monkeypatch, {"IPKernelApp": {}})
    made = []

    class NotebookBar:
        def __init__(self, total, **kw):
            made.append((total, kw))
            self.n, self.written, self.postfix, self.closed = 0, [], None, False

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def refresh(self):
            pass

        def write(self, line, file=None):
            self.written.append(line)

        def close(self):
            self.closed = True
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=NotebookBar))
    p = Progress(3)                                   # stderr: captured by pytest, not a terminal
    assert p.mode == "notebook" and made == [(3, {"leave": False, "unit": "step"})]
    for k in range(3):
        if p.tick():
            p.draw(f"epoch 1/1 loss {0.5 - k / 10:.4f}")
    assert p.bar.n == 3 and p.bar.postfix == "epoch 1/1 loss 0.3000"     # the last step always redraws
    p.epoch_done(1, 1, History(loss=[0.3], seconds=[0.25]))
    p.close()
    assert p.bar.written == ["epoch 1/1: loss 0.3000 (0.25s)"] and p.bar.closed
    assert capsys.readouterr().err == ""              # nothing else written to the cell's stderr


def test_jupyter_without_ipywidgets_gets_the_text_bar(monkeypatch, capsys):
    _fake_ipython(monkeypatch, {"IPKernelApp": {}})

    def no_widgets(*a, **k):
        raise ImportError("IProgress not found. Please update jupyter and ipywidgets.")
    monkeypatch.setitem(sys.modules, "tqdm.notebook", types.SimpleNamespace(tqdm=no_widgets))
    p = Progress(2)
    assert p.mode == "bar"                            # Jupyter shows tqdm's \r bar in place
    p.tick(), p.tick()
    p.draw("epoch 1/1 loss 0.1234")
    p.close()
    assert "loss 0.1234" in capsys.readouterr().err


def test_fit_reports_the_progress_it_showed(monkeypatch, rng):
    # inside fit: every in-epoch line carries the running loss of the epoch, read from the device
    out = io.StringIO()
    monkeypatch.setattr(progress, "LINE_S", 0.0)
    real = Progress.__init__
    monkeypatch.setattr(Progress, "__init__", lambda self, total, enabled=None, stream=None:
                        real(self, total, enabled, out))
    from gpubp import MLP
    X, y = rng.random((40, 4)), rng.integers(0, 2, 40)
    hist = MLP([4, 3, 2], backend="numpy", seed=0).fit(X, y, epochs=2, batch_size=10, lr=0.5)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(rf"epoch 1/2 loss {hist.loss[0]:.4f} \(step 4/8, \d+s\)", lines[3]), lines[3]
    assert lines[4].startswith(f"epoch 1/2: loss {hist.loss[0]:.4f} (")
    assert np.isclose(float(lines[-1].split("loss ")[1].split()[0]), hist.loss[1], atol=1e-4)
