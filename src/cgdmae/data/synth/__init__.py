"""The synthetic vehicle world: the embedded default and the test data of the whole project."""

from cgdmae.data.synth.world import (
    PART_CLASSES,
    VERI_COLORS,
    VERI_TYPES,
    VIEWPOINTS,
    Camera,
    Identity,
    Render,
    Shot,
    SynthConfigError,
    SynthWorld,
    VehicleModel,
)

__all__ = [
    "PART_CLASSES",
    "VERI_COLORS",
    "VERI_TYPES",
    "VIEWPOINTS",
    "Camera",
    "Identity",
    "Render",
    "SynthConfigError",
    "Shot",
    "SynthWorld",
    "VehicleModel",
]
