"""The epoch bar: live widget in a notebook, plain text once closed; rate-limited everywhere."""
import pytest

from cifar_hw2.training import progress


class FakeHandle:
    def __init__(self):
        self.updates = []

    def update(self, obj, **kwargs):
        self.updates.append((obj, kwargs))


@pytest.fixture
def notebook(monkeypatch):
    """Pretend to be in a kernel; record what would be displayed."""
    shown = []

    def display(obj, **kwargs):
        shown.append((obj, kwargs))
        return FakeHandle() if kwargs.get("display_id") else None

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "_display", display)
    return shown


@pytest.mark.parametrize("mode", ["epoch", "off"])
def test_no_bar_unless_asked(mode):
    assert progress.epoch_bar(10, "epoch 1/2", mode) is None


def test_terminal_bar_is_tqdm_text_and_rate_limited(capsys):
    bar = progress.epoch_bar(10, "epoch 1/2", "bar")
    assert isinstance(bar, progress.text_tqdm) and bar.mininterval == 1.0
    bar.close()


def test_notebook_bar_is_a_widget_while_live_and_text_once_closed(notebook):
    import ipywidgets

    bar = progress.epoch_bar(156, "epoch 3/6", "bar")
    assert bar.mininterval == 1.0
    (widget, kwargs), = notebook
    assert isinstance(widget, ipywidgets.Widget) and kwargs == {"display_id": True}
    bar.update(156)
    bar.set_postfix(loss="3.9582", img_s="713", refresh=False)
    bar.close()
    (obj, kwargs), = bar._handle.updates
    assert kwargs == {"raw": True} and list(obj) == ["text/plain"]   # no widget left in the output
    line = obj["text/plain"]
    assert line.startswith("epoch 3/6: 100%") and "156/156" in line and "loss=3.9582" in line


def test_an_interrupted_epoch_keeps_its_partial_bar(notebook):
    bar = progress.epoch_bar(156, "epoch 1/6", "bar")
    bar.update(62)
    bar.close()
    line = bar._handle.updates[0][0]["text/plain"]
    assert "62/156" in line and "100%" not in line and " 0%" not in line


def test_output_into_a_closed_pipe_stops_and_the_program_goes_on(tmp_path):
    """`| head -1`: the reader goes; the next write would raise BrokenPipeError. It is dropped, and the
    stream's descriptor points at /dev/null, so the flush at exit cannot fail either."""
    import errno
    import io
    import os
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write_end, "wb"), encoding="utf-8")
    safe = progress._SurvivingStream(stream)
    print("first line", file=safe, flush=True)
    os.close(read_end)
    for _ in range(3):
        print("after the reader left", file=safe, flush=True)
    assert os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    stream.close()

    class HungUp(io.StringIO):            # a closed terminal: EIO
        def flush(self):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    print("stop line", file=progress._SurvivingStream(HungUp()), flush=True)

    class Full(io.StringIO):              # anything else is still an error
        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OSError, match="No space left"):
        progress._SurvivingStream(Full()).flush()


def test_survive_closed_output_wraps_stdout_and_stderr_for_the_block_only():
    import sys
    before = sys.stdout, sys.stderr
    with progress.survive_closed_output():
        assert isinstance(sys.stdout, progress._SurvivingStream) and isinstance(sys.stderr, progress._SurvivingStream)
        assert sys.stdout.isatty() == before[0].isatty()          # the rest passes through
    assert (sys.stdout, sys.stderr) == before
