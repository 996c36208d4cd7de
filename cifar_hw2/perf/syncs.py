"""Count the places where code would make the host wait for a CUDA device, on any device.

On CUDA a host sync stalls the CPU until the GPU has finished everything queued so far, so the
next kernels are not queued in time and the GPU idles. `torch.cuda.set_sync_debug_mode` finds them,
but only on a GPU. `HostSyncs` finds the same kinds of call on the CPU or the meta device (where
every op is shape-only and nothing runs), so a test can keep them from coming back:

  - reading a device value on the host: `.item()`, `bool(t)`, `int(t)`, `.tolist()`
    (aten._local_scalar_dense), `torch.equal`, `is_nonzero`
  - ops whose output size depends on the data: boolean-mask indexing and assignment (they call
    nonzero), nonzero, masked_select, unique, repeat_interleave without output_size
  - copies between the host and a device that are not asynchronous: host to device with
    non_blocking=False (pageable memory: the copy waits for the stream), and device to host
  - `torch.tensor(data, device=...)` / `torch.as_tensor(data, device=...)` with a device other
    than the CPU: a blocking copy from pageable memory (invisible to dispatch modes, so those two
    functions are wrapped while counting)

    with HostSyncs() as syncs:
        augment(images_on_meta)
    assert syncs.count == 0, syncs.events

Tensors on the meta device stand in for CUDA ones here: nothing is computed, so a chunk of 512
images costs milliseconds. Ops inside a compiled graph are traced once and are not seen.
"""
from __future__ import annotations

import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Ops that always need the device's values on the host.
_ALWAYS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten.equal.default, aten.is_nonzero.default, aten._unique2.default, aten.unique_dim.default,
           aten.unique_consecutive.default, aten.allclose.default}


def _caller() -> str:
    """The innermost frame outside torch and this module, as "file.py:line in function"."""
    import traceback
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = frame.filename.replace("\\", "/")
        if "/torch/" not in path and not path.endswith("syncs.py"):
            return f"{path.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return "?"


def _device(t) -> str | None:
    return t.device.type if isinstance(t, torch.Tensor) else None


class HostSyncs(TorchDispatchMode):
    """Context manager counting would-be host syncs (see the module docstring). `events` lists
    them as strings, e.g. "aten.index_put_.default (boolean mask)".

    cpu_is_device=True counts CPU tensors as device tensors: for code that runs wholly on the
    device on CUDA (a training step) but is tested on the CPU. Host-to-device copies are then not
    seen (there is no other device); reading values and data-dependent shapes are."""

    def __init__(self, cpu_is_device: bool = False):
        super().__init__()
        self.cpu_is_device = cpu_is_device
        self.events: list[str] = []

    def _is_off_host(self, t) -> bool:
        return isinstance(t, torch.Tensor) and (t.device.type != "cpu" or self.cpu_is_device)

    @property
    def count(self) -> int:
        return len(self.events)

    def __enter__(self):
        self._saved = torch.tensor, torch.as_tensor
        torch.tensor, torch.as_tensor = self._wrap(torch.tensor), self._wrap(torch.as_tensor)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.tensor, torch.as_tensor = self._saved
        return super().__exit__(*exc)

    def _wrap(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            device = kwargs.get("device")
            if device is not None and torch.device(device).type != "cpu":
                self.events.append(f"torch.{fn.__name__}(..., device={device}) (blocking host-to-device copy) "
                                   f"at {_caller()}")
            return out
        return wrapped

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        why = self._why(func, args, kwargs)
        if why:
            self.events.append(f"{func} ({why}) at {_caller()}")
        return func(*args, **kwargs)

    def _why(self, func, args, kwargs) -> str | None:
        if func in _ALWAYS:
            return "reads device values" if self._is_off_host(args[0]) else None
        if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
            on_device = self._is_off_host(args[0])
            masks = [i for i in args[1] if isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)]
            return "boolean mask" if on_device and masks else None
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            return "repeat_interleave without output_size" if self._is_off_host(args[0]) else None
        if func in (aten._to_copy.default, aten.copy_.default):
            src = args[1] if func is aten.copy_.default else args[0]
            dst = _device(args[0]) if func is aten.copy_.default else str(torch.device(kwargs.get("device") or
                                                                                        src.device).type)
            non_blocking = kwargs.get("non_blocking", args[2] if func is aten.copy_.default and len(args) > 2 else False)
            if src.device.type == "cpu" and dst != "cpu" and not non_blocking:
                return "blocking host-to-device copy"
            if src.device.type != "cpu" and dst == "cpu":
                return "device-to-host copy"
        return None
