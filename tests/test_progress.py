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
