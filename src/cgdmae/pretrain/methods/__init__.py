"""Registry of pre-training methods; importing this package registers the built-in ones."""

from cgdmae.pretrain.methods import cgd_mae as _cgd_mae  # noqa: F401  (registers cgd_mae)
from cgdmae.pretrain.methods import mae as _mae  # noqa: F401  (registers mae, scratch)
from cgdmae.pretrain.methods import mae_lite as _mae_lite  # noqa: F401  (registers mae_lite)
from cgdmae.pretrain.methods import person_mae as _person_mae  # noqa: F401  (registers person_mae)
from cgdmae.pretrain.methods import person_vit as _person_vit  # noqa: F401  (registers person_vit)
from cgdmae.pretrain.methods.base import (
    MethodInputs,
    PretrainMethod,
    available_methods,
    method_class,
    register_method,
    with_defaults,
)

__all__ = [
    "MethodInputs",
    "PretrainMethod",
    "available_methods",
    "method_class",
    "register_method",
    "with_defaults",
]
