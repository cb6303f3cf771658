"""Loading a trained run for evaluation, prediction or export, with one clear line for a bad ``--load-config``.

nerfstudio's ``eval_setup`` asserts that the file holds a ``TrainerConfig`` (a bare ``AssertionError``) and lets
YAML errors through with their traceback; the file is checked here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Optional, Tuple

import yaml
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import Pipeline

from semsplat_ns.errors import UserInputError

RUN_CONFIG_HINT = (
    "pass the config.yml that ns-train wrote into the run folder (outputs/<scene>/semsplat/<time>/config.yml)"
)


def read_run_config(path: Path) -> TrainerConfig:
    """The trainer config that ``ns-train`` saved at ``path``.

    Args:
        path: ``--load-config``.

    Raises:
        UserInputError: The path is missing or a folder, or the file is not a config saved by ns-train.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a config.yml" if path.is_dir() else "does not exist"
        raise UserInputError(f"--load-config {path} {what}; {RUN_CONFIG_HINT}")
    try:
        config = yaml.load(path.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, UnicodeDecodeError, ImportError, AttributeError, TypeError) as error:
        reason = " ".join(str(error).split())[:200]
        message = f"{path}: not a run config saved by ns-train ({type(error).__name__}: {reason})"
        raise UserInputError(message) from error
    if not isinstance(config, TrainerConfig):
        raise UserInputError(f"{path}: not a run config saved by ns-train (it holds a {type(config).__name__})")
    return config


def load_run(
    path: Path,
    test_mode: Literal["test", "val", "inference"],
    update_config_callback: Optional[Callable[[TrainerConfig], TrainerConfig]] = None,
) -> Tuple[TrainerConfig, Pipeline, Path, int]:
    """nerfstudio's ``eval_setup`` of the run at ``path``, after :func:`read_run_config` checked the file.

    Args:
        path: ``--load-config``.
        test_mode: Which datasets to load (as ``eval_setup``).
        update_config_callback: Changes the config before the pipeline is built.

    Returns:
        The config, the pipeline with the last checkpoint loaded, that checkpoint's path and its step.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    read_run_config(path)
    return eval_setup(Path(path), test_mode=test_mode, update_config_callback=update_config_callback)
