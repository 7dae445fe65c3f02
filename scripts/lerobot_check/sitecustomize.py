# Verification venv only: PyPI's torchvision is a CUDA build whose C ops cannot load beside the
# CPU torch here; its pure-Python parts (transforms, io.VideoReader with PyAV) are what LeRobot's
# dataset code uses, so registrations for the missing torchvision::* ops are skipped.
import torch.library as _lib

_orig_fake = _lib.register_fake
def _fake(op, *a, **k):
    if isinstance(op, str) and op.startswith("torchvision::"):
        return (lambda f: f) if not a else a[0]
    return _orig_fake(op, *a, **k)
_lib.register_fake = _fake
_orig_impl = _lib.Library.impl
def _impl(self, op_name, fn=None, *a, **k):
    if getattr(self, "ns", None) == "torchvision":
        return fn
    return _orig_impl(self, op_name, fn, *a, **k)
_lib.Library.impl = _impl
