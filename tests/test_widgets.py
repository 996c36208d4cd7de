"""The explorers' static fallback shows its figure exactly once."""
import matplotlib.pyplot as plt
import pytest
import torch

from cifar_hw2.notebook import widgets


@pytest.mark.parametrize("explorer", ["augmentation", "gamma"])
def test_static_explorer_shows_one_figure_and_leaves_none_open(explorer, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    plt.close("all")
    if explorer == "augmentation":
        result = widgets.augmentation_explorer(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), interactive=False)
    else:
        result = widgets.gamma_explorer(interactive=False)
    # None as the cell's result, and no open figure for the inline backend to show again
    assert result is None and len(shown) == 1 and isinstance(shown[0], plt.Figure)
    assert plt.get_fignums() == []


def test_live_explorer_keeps_its_figure_outside_the_widget(monkeypatch):
    """The sliders are a widget; the figure is a plain image output that each change replaces, so
    a saved notebook reopened without its widget state still shows a figure."""
    ipywidgets = pytest.importorskip("ipywidgets")
    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def display(obj, display_id=None, **kw):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr("IPython.display.display", display)
    plt.close("all")
    assert widgets.gamma_explorer(interactive=True) is None
    assert isinstance(shown[0], ipywidgets.Widget) and isinstance(shown[1], plt.Figure) and len(shown) == 2
    gamma = next(w for w in shown[0].children if w.description == "gamma")
    gamma.value = 4.0
    assert len(updates) == 1 and isinstance(updates[0], plt.Figure) and updates[0] is not shown[1]
    assert "γ = 4" in [t.get_text() for t in updates[0].axes[0].get_legend().get_texts()]
    assert plt.get_fignums() == []
