"""Interactive explorers for the notebooks (ipywidgets), with a static fallback.

The sliders are a widget, but the figure they redraw is not: it is an ordinary image output that
each change replaces (a display handle), so a saved notebook keeps the last figure drawn. The sliders
survive a save only where JupyterLab writes the widget state into the file (Settings → Save Widget
State Automatically, off by default); otherwise a new kernel shows "Error displaying widget: model
not found" in their place until the cell runs again. Notebooks 01 and 02 say so.

With `interactive=False`, or where ipywidgets is missing, each explorer shows one static figure
for its default values; that is what a headless run (papermill, nbval) should ask for. Either
way an explorer displays its figure itself and returns None: returning the figure as well would
show it twice in a notebook (once as the cell's result, once by the inline backend).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torchvision.transforms import v2

from ..augment import normalize_transform, noise_transform
from ..loss_curves import loss_and_gradient
from ..plots import denormalize, image_rows


def _show_once(fig) -> None:
    """Display `fig` and close it, so that the inline backend does not show it a second time."""
    from IPython.display import display
    display(fig)
    plt.close(fig)


def _show(render, **sliders) -> None:
    """Display the sliders, then render(**values) as a plain image that every change replaces."""
    import ipywidgets
    from IPython.display import display
    for name, slider in sliders.items():
        slider.description = name

    def draw():
        fig = render(**{name: slider.value for name, slider in sliders.items()})
        plt.close(fig)   # the handle shows it; the inline backend must not show it again
        return fig

    display(ipywidgets.HBox(list(sliders.values()), layout=ipywidgets.Layout(flex_flow="row wrap")))
    handle = display(draw(), display_id=True)
    for slider in sliders.values():
        slider.observe(lambda change: handle.update(draw()), names="value")


def augmentation_explorer(images: torch.Tensor, interactive: bool = True):
    """Sliders: rotation angle, noise σ (normalised units) and the AutoAugment policy, on uint8 images."""
    policies = [p.name for p in v2.AutoAugmentPolicy]

    def render(angle=10.0, sigma=0.1, policy="CIFAR10", seed=0):
        torch.manual_seed(seed)
        norm, noise = normalize_transform(), noise_transform(1.0, sigma)
        auto = v2.AutoAugment(v2.AutoAugmentPolicy[policy], fill=128)
        return image_rows({
            "original": images,
            f"rotate {angle:g}°": torch.stack([v2.functional.rotate(im, angle) for im in images]),
            f"noise σ={sigma:g}": denormalize(torch.stack([noise(norm(im)) for im in images])),
            f"AutoAugment\n{policy}": torch.stack([auto(im) for im in images]),
        })

    if interactive:
        try:
            import ipywidgets as w
            return _show(render, angle=w.FloatSlider(value=10, min=-45, max=45, step=1),
                         sigma=w.FloatLogSlider(value=0.1, base=10, min=-3, max=0),
                         policy=w.Dropdown(options=policies, value="CIFAR10"),
                         seed=w.IntSlider(value=0, min=0, max=20))
        except ImportError:
            pass
    _show_once(render())


def gamma_explorer(interactive: bool = True):
    """A γ slider: the focal loss and its gradient on the true logit against p_t."""
    from ..losses import build_loss

    def render(gamma=2.0):
        p = torch.linspace(0.01, 0.99, 200, dtype=torch.float64)
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        for g, style in ((0.0, ":"), (gamma, "-")):
            loss, grad = loss_and_gradient(build_loss("focal", gamma=g), p)
            label = "CE (γ = 0)" if g == 0 else f"γ = {g:g}"
            a.plot(p, loss, ls=style, label=label)
            b.plot(p, grad, ls=style, label=label)
        a.set(xlabel="$p_t$", ylabel="loss", ylim=(0, 4.7), title="loss")
        b.set(xlabel="$p_t$", ylabel="|∂loss/∂$z_y$|", title="gradient on the true logit")
        a.legend(), b.legend()
        fig.tight_layout()
        return fig

    if interactive:
        try:
            import ipywidgets as w
            return _show(render, gamma=w.FloatSlider(value=2.0, min=0, max=5, step=0.1))
        except ImportError:
            pass
    _show_once(render())
