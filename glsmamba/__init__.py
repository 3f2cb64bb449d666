"""GLSMamba: global-local state space models for video-based human pose estimation.

Python API (imported on first use, so ``import glsmamba`` stays light)::

    import glsmamba
    estimator = glsmamba.PoseEstimator.from_checkpoint("work_dirs/synth_tiny")
    model = glsmamba.create_model("glsmamba-tiny")
    glsmamba.list_models()
    glsmamba.load_vitpose(encoder, "vitpose-b.pth")   # official .pth or an HF folder
"""

__version__ = "0.1.0"

_LAZY = {
    "PoseEstimator": "glsmamba.inference.estimator",
    "FrameResult": "glsmamba.inference.estimator",
    "Person": "glsmamba.inference.estimator",
    "create_model": "glsmamba.models.registry",
    "list_models": "glsmamba.models.registry",
    "load_vitpose": "glsmamba.models.vitpose",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'glsmamba' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
