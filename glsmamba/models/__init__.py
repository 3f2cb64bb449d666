"""GLSMamba models: presets via ``create_model(name, **overrides)`` and ``list_models()``."""
from glsmamba.models.registry import (create_model, get_spec, list_models, register_model,
                                      unregister_model)

__all__ = ["create_model", "get_spec", "list_models", "register_model", "unregister_model"]
