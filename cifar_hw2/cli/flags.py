"""TrainConfig's fields as command-line flags: one flag per field, its help and parsing. `train` and
`bench` build their flags here (cli/__init__.py); a config check's message names them as flags
because the commands run inside `naming.settings_said_as_flags`."""
from __future__ import annotations

import argparse
import dataclasses

from ..training.config import TrainConfig, field_help
from ..training.naming import flag_of


def _optional_int(text: str):
    """'all' / 'auto' / 'none' → None (the config's "not limited" / "choose for me"), else an int."""
    if text.lower() in ("none", "all", "auto"):
        return None
    try:
        return int(text)
    except ValueError:    # argparse would name this function in its message
        raise argparse.ArgumentTypeError(f"expected an integer or 'all'/'auto'/'none', got {text!r}") from None


# Fields whose config comment speaks Python (None, $VAR defaults): their command-line wording.
CLI_HELP = {
    "data": ("DIR", "folder holding cifar-100-python/ (default: $CIFAR_HW2_DATA, else cifar_hw2/data under "
                    "$XDG_CACHE_HOME or ~/.cache)"),
    "train_per_class": ("N", "training images per class: 'all' (the 450 left after validation) or N "
                             "for a stratified subset (default: all)"),
    "test_per_class": ("N", "test images per class: 'all' (the 10,000) or N <= 100 (default: all)"),
    "workers": ("N", "loader processes with --augment-on loader: 'auto' (the usable cores; 0 on a "
                     "1-core machine) or N (default: auto)"),
    "out": ("DIR", None),
    "time_limit": ("HOURS", "stop cleanly once this process has run this many hours: checkpoint, exit 0, and a "
                            "line saying resume to continue; e.g. 11 on a 12 h Colab session. A stop waits for a "
                            "running evaluation: leave that much margin (default: no limit)"),
}


def _optional_float(text: str):
    """'none' → None (no limit), else a float (NaN and inf are refused by the config's check)."""
    try:
        return None if text.lower() == "none" else float(text)
    except ValueError:    # argparse would name this function in its message
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _default_text(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def add_config_flags(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      defaults: dict | None = None) -> None:
    """One flag per TrainConfig field (or per field in `names`). Without `defaults` (train) only the
    flags given override the preset; with them (bench) a flag not given takes its default there, else
    the config's."""
    helps = field_help()
    for f in dataclasses.fields(TrainConfig):
        if names is not None and f.name not in names:
            continue
        default = argparse.SUPPRESS if defaults is None else defaults.get(f.name, f.default)
        metavar, text = CLI_HELP.get(f.name, (None, None))
        # train says the config's default (the preset may change it); bench's is argparse's own.
        shown = f" (default: {_default_text(f.default)})" if defaults is None else ""
        text = (text or f"{helps.get(f.name, '')}{shown}").replace("%", "%%")
        kind = str(f.type)
        if f.name == "pretrained":
            p.add_argument("--pretrained", nargs="?", const=True, default=default, metavar="PATH",
                           help="start from ImageNet weights: from the Hugging Face hub, or from a local "
                                "timm weight file PATH (default: from the hub)")
            p.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=False,
                           default=default, help="train from scratch")
        elif kind == "bool":
            p.add_argument(flag_of(f.name), action=argparse.BooleanOptionalAction, default=default, help=text)
        elif kind == "int":
            p.add_argument(flag_of(f.name), type=int, default=default, metavar="N", help=text)
        elif kind == "int | None":
            p.add_argument(flag_of(f.name), type=_optional_int, default=default, metavar=metavar, help=text)
        elif kind == "float":
            p.add_argument(flag_of(f.name), type=float, default=default, metavar="X", help=text)
        elif kind == "float | None":
            p.add_argument(flag_of(f.name), type=_optional_float, default=default, metavar=metavar or "X", help=text)
        else:
            p.add_argument(flag_of(f.name), type=str, default=default, metavar=metavar or "NAME", help=text)
