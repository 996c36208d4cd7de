"""The per-epoch progress bar: live while a run trains, one plain line once the epoch is over.

    with shown_epoch(total, "epoch 3/6", mode) as bar:    None unless mode == "bar"
        bar.update(k); bar.set_postfix(..., refresh=False)

`progress_mode` picks the mode ("auto": a bar in a notebook or a terminal, else one line per
epoch) and `epoch_line` is that line.

Output whose reader goes away (`train ... | head -1`, a closed terminal) must not stop a run:
`survive_closed_output()` (the CLI runs every command in it) makes a write that fails with EPIPE
or EIO point that stream at /dev/null, as the Python docs' "Note on SIGPIPE" advises: the output
stops there, the program goes on, and no BrokenPipeError traceback is printed at exit either.

In a terminal it is tqdm's text bar. In a notebook it is tqdm's widget, displayed through an
IPython display handle; on close, that output is replaced by the bar's final text line. A saved
notebook then holds only text: a widget output reads as "0%|" (the text it was created with)
when the notebook is untrusted and as a blank gap once its widget state is gone, which made
executed notebooks look as if training never ran.

Rate limit: at most one redraw a second (mininterval=1; callers pass refresh=False to
set_postfix). A notebook bar is an ipywidget and every redraw sends iopub messages; nbval reads
iopub only after a cell ends, and ZeroMQ drops what is queued beyond its 1000-message high-water
mark -- including the kernel's "idle" message, which then fails the cell. At 1 redraw/s a
1-minute cell sends ~200.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys

from tqdm.std import tqdm as text_tqdm

MININTERVAL = 1.0  # seconds between redraws; see the module docstring


def in_notebook() -> bool:
    """True inside a Jupyter kernel (not a plain IPython terminal) with ipywidgets importable."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401  (tqdm's widget bar needs it)
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _display(obj, **kwargs):
    """IPython's display (a seam for the tests, which run outside a kernel)."""
    from IPython.display import display
    return display(obj, **kwargs)


def _notebook_bar_class():
    from tqdm.notebook import tqdm as widget_tqdm

    class NotebookBar(widget_tqdm):
        """tqdm's widget bar whose output becomes its final text line when it closes."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, display=False, **kwargs)
            self._handle = _display(self.container, display_id=True)

        def close(self):
            if self.disable:
                return
            # The text tqdm prints in a terminal, at this point (complete or not: an interrupted
            # epoch keeps its partial bar, which is what happened).
            line = text_tqdm.format_meter(**{**self.format_dict, "ncols": 100})
            super().close()
            if self._handle is not None:
                self._handle.update({"text/plain": line}, raw=True)

    return NotebookBar


def epoch_bar(total: int, desc: str, mode: str):
    """A progress bar over `total` batches when mode == "bar", else None (mode "epoch"/"off")."""
    if mode != "bar":
        return None
    kwargs = dict(total=total, desc=desc, unit="batch", mininterval=MININTERVAL)
    if in_notebook():
        return _notebook_bar_class()(**kwargs, leave=False)
    return text_tqdm(**kwargs, leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def shown_epoch(total: int, desc: str, mode: str):
    """`epoch_bar`, closed when the epoch ends (also when it stops inside)."""
    bar = epoch_bar(total, desc, mode)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def progress_mode(mode: str) -> str:
    """bar / epoch / off; "auto" is a bar in a notebook or a terminal, else a line per epoch (a log)."""
    if mode != "auto":
        return mode
    return "bar" if "ipykernel" in sys.modules or sys.stderr.isatty() else "epoch"


def epoch_line(row: dict, epochs: int) -> str:
    """The line printed after each epoch: a history row (fractions), shortened."""
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.3f}  val top1 {row['val_top1']:.3f}  test top1 {row['test_top1']:.3f} "
            f"ece {row['test_ece']:.3f}  {row['images_per_s']:.0f} img/s")


class _SurvivingStream:
    """A text stream (stdout, stderr) that outlives its reader: see the module docstring."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except OSError as e:
                self._reader_gone(e)
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except OSError as e:
                self._reader_gone(e)

    def _reader_gone(self, e: OSError) -> None:
        if not isinstance(e, BrokenPipeError) and e.errno != errno.EIO:   # EIO: a hung-up terminal
            raise e
        self._gone = True
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())     # later writes, and the flush at exit, land there
            os.close(devnull)
            self._stream.flush()                         # what was buffered goes there too

    def __getattr__(self, name):                         # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def survive_closed_output():
    """sys.stdout and sys.stderr, for the block, as streams that outlive their reader."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (None if s is None else _SurvivingStream(s) for s in saved)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
