"""The ``irt-data`` dataparser, registered through the ``nerfstudio.dataparser_configs`` entry point.

Keep this module free of ``semsplat_ns.config`` and ``nerfstudio.configs.method_configs`` imports:
nerfstudio loads the entry points while ``method_configs`` is still being initialised.
"""

from __future__ import annotations

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from semsplat_ns.data.irt_dataparser import IRTDataParserConfig

irt_data = DataParserSpecification(
    config=IRTDataParserConfig(),
    description=(
        "IRT / Carla-MVS multi-view segmentation scenes: <scene>/{train,test}/{color,rgb,pose,intrinsics}, "
        "photos in color/, labels (class id in channel 0) in rgb/ for the labelled views, 4x4 OpenCV "
        "camera-to-world poses; optional classes.json."
    ),
)
