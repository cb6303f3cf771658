"""semsplat's console scripts (``[project.scripts]`` in pyproject.toml)."""


def import_nerfstudio_method_registry() -> None:
    """Imports ``nerfstudio.configs.method_configs`` from a shallow call stack: call first thing in an entry point
    of a command that loads a trained run (``eval_setup``'s module imports the registry).

    The import builds a placeholder config for each of nerfstudio's 26 external methods, and each placeholder calls
    ``inspect.stack()``, which costs a scan of every module in ``sys.modules`` (~4300 of them by then) for each frame
    of the import machinery on the stack (files such as ``<frozen importlib._bootstrap>``, 5 per nested import).
    From inside ``eval_setup``'s own nested imports the stack holds twice as many of those frames as from an entry
    point: ~3 s more on the 2-core CPU box, of the ~7 s those calls take there.
    """
    import nerfstudio.configs.method_configs  # noqa: F401
