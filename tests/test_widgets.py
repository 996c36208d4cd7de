"""The explorers' static fallback shows its figure exactly once."""
import matplotlib.pyplot as plt
import pytest
import torch

from cifar_hw2 import widgets


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
