"""The ``semsplat-data`` dataparser, registered through the ``nerfstudio.dataparser_configs`` entry point.

Keep this module free of ``semsplat_ns.config`` and ``nerfstudio.configs.method_configs`` imports:
nerfstudio loads the entry points while ``method_configs`` is still being initialised.
"""

from __future__ import annotations

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from semsplat_ns.data.capture_dataparser import SemSplatDataParserConfig

semsplat_data = DataParserSpecification(
    config=SemSplatDataParserConfig(),
    description=(
        "semsplat's default: an IRT scene (train/, as irt-data), a nerfstudio capture (transforms.json, as "
        "ns-process-data writes it) or a COLMAP model (sparse/0 + images/), detected from the folder; labels "
        "of a few images in labels/<image stem>.png, optional classes.json (docs/CAPTURES.md)."
    ),
)
