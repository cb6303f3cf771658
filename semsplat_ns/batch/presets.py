"""Is an ns-train method registered? Checked before a batch starts, so a preset that this installation lacks
stops it with one line instead of failing every scene's training.

ns-train's methods are nerfstudio's own plus those of the ``nerfstudio.method_configs`` entry points and of
``$NERFSTUDIO_METHOD_CONFIGS`` (:func:`nerfstudio.plugins.registry.discover_methods`). Loading them all takes
nerfstudio's import (15 s and more); an entry point or variable entry named like the method answers without
it, and only otherwise are semsplat's own entry points loaded to compare their method names.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import List, Set

from semsplat_ns.errors import UserInputError

ENTRY_POINT_GROUP = "nerfstudio.method_configs"
"""Where nerfstudio plugins register methods."""
ENV_VAR = "NERFSTUDIO_METHOD_CONFIGS"
"""nerfstudio's variable of extra methods: ``name=module:attribute,...``."""


def _listed_names() -> Set[str]:
    """Method names that entry points and the variable list, without importing anything."""
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for definition in os.environ.get(ENV_VAR, "").split(","):
        if "=" in definition:
            names.add(definition.split("=", 1)[0].strip())
    return names


def semsplat_methods() -> List[str]:
    """The method names of semsplat's own entry points (imports them, and with them nerfstudio)."""
    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.split(":", 1)[0].split(".", 1)[0] != "semsplat_ns":
            continue
        spec = ep.load()
        config = getattr(spec, "config", None)
        names.append(getattr(config, "method_name", ep.name))
    return sorted(names)


def check_preset(name: str) -> None:
    """Raises a one-line :class:`UserInputError` unless ``ns-train name`` is a registered method.

    Args:
        name: The method (``--preset``), e.g. semsplat or semsplat-fast.
    """
    if name in _listed_names():
        return
    ours = semsplat_methods()
    if name in ours:
        return
    raise UserInputError(
        f"--preset {name}: ns-train has no method of that name in this environment; semsplat's registered "
        f"methods: {', '.join(ours) or 'none'}. Presets are registered through semsplat-ns's "
        f"{ENTRY_POINT_GROUP} entry points: if this one was added after the package was installed, reinstall "
        "it (pip install -e .)"
    )
