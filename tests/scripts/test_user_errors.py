"""Bad input ends every command with one line on stderr and exit code 2; bugs keep their traceback.

Our CLIs run in-process (fast); nerfstudio's ns-train, ns-eval, ns-render and ns-viewer run as the real
console scripts, each in a process of its own, since only a real process shows what the user sees. Their imports
take ~15 s of CPU each, nearly all of it the modules every one of them loads first (nerfstudio's method configs,
semsplat's through its entry points): the ``console_scripts`` fixture (conftest.py) loads those once in a driver
process and forks a process for each command, which imports the rest of its console script and runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable

import pytest

from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.errors import EXIT_CODE, UserInputError, error_line, exit_on_user_error, is_user_error
from semsplat_ns.synthetic.town import DemoSceneError

BROKEN_JSON = "{broken"


def _one_error_line(stderr: str, prog: str) -> str:
    """The one ``<prog>: error:`` line, which must end stderr; third-party warnings may precede it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr[-3000:]
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0]
    assert errors[0].startswith(f"{prog}: error: "), errors[0]
    return errors[0]


def _exits_with_one_line(capsys, prog: str, call: Callable[[], object]) -> str:
    with pytest.raises(SystemExit) as exited:
        call()
    assert exited.value.code == EXIT_CODE
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    return _one_error_line(captured.err, prog)


# ------------------------------------------------------------------------------- the error module


def test_user_errors_and_bugs_are_told_apart():
    assert is_user_error(IRTDataError("x")) and is_user_error(UserInputError("x"))
    assert isinstance(IRTDataError("x"), ValueError)  # callers that catch ValueError still do
    assert is_user_error(DemoSceneError("x"))  # a module's own error class, listed by name
    assert not is_user_error(ValueError("x")) and not is_user_error(KeyError("x"))
    assert error_line(IRTDataError("a.json: bad\n  second line"), "prog") == "prog: error: a.json: bad second line"


def test_exit_on_user_error(capsys, monkeypatch):
    monkeypatch.delenv("SEMSPLAT_TRACEBACK", raising=False)

    def fail(error: Exception) -> None:
        with exit_on_user_error("semsplat-x"):
            raise error

    line = _exits_with_one_line(capsys, "semsplat-x", lambda: fail(IRTDataError("/s/classes.json: not valid JSON")))
    assert line == "semsplat-x: error: /s/classes.json: not valid JSON"
    with pytest.raises(KeyError):  # a bug: untouched, traceback and all
        fail(KeyError("bug"))
    monkeypatch.setenv("SEMSPLAT_TRACEBACK", "1")
    with pytest.raises(IRTDataError):
        fail(IRTDataError("shown with its traceback"))


@pytest.mark.parametrize("case", ["user error", "bug", "traceback asked for"])
def test_excepthook_installed_by_importing_semsplat(tmp_path, case):
    """What nerfstudio's commands rely on: importing semsplat_ns is enough."""
    (tmp_path / "classes.json").write_text(BROKEN_JSON)
    code = (
        "import semsplat_ns.data.classes as classes, sys\n"
        f"classes.read_classes_json({str(tmp_path / 'classes.json')!r}) if sys.argv[1] != 'bug' else {{}}['missing']\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SEMSPLAT_TRACEBACK"}
    if case == "traceback asked for":
        env["SEMSPLAT_TRACEBACK"] = "1"
    arg = "bug" if case == "bug" else "user"
    done = subprocess.run([sys.executable, "-c", code, arg], env=env, capture_output=True, text=True, timeout=60)
    if case == "user error":
        assert done.returncode == 2
        assert done.stderr == f"-c: error: {tmp_path / 'classes.json'}: not valid JSON " + (
            "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))\n"
        )
    else:
        assert done.returncode == 1 and "Traceback" in done.stderr
        assert ("KeyError: 'missing'" if case == "bug" else "IRTDataError") in done.stderr


# ------------------------------------------------------------------------------------------ our CLIs


def test_semsplat_eval_and_export_missing_config(tmp_path, capsys, monkeypatch):
    from semsplat_ns.scripts import eval as eval_script
    from semsplat_ns.scripts import export as export_script
    from semsplat_ns.scripts import predict as predict_script

    missing = tmp_path / "missing.yml"
    broken = tmp_path / "broken.yml"
    broken.write_text("pipeline: [unclosed\n")
    plain = tmp_path / "plain.yml"
    plain.write_text("just: a mapping\n")
    scripts = (("semsplat-eval", eval_script), ("semsplat-export", export_script), ("semsplat-predict", predict_script))
    for prog, module in scripts:
        for path, expected in (
            (missing, f"--load-config {missing} does not exist; pass the config.yml that ns-train wrote"),
            (tmp_path, f"--load-config {tmp_path} is a folder, not a config.yml"),
            (broken, f"{broken}: not a run config saved by ns-train (ParserError: "),
            (plain, f"{plain}: not a run config saved by ns-train (it holds a dict)"),
        ):
            monkeypatch.setattr(sys, "argv", [prog, "--load-config", str(path)])
            line = _exits_with_one_line(capsys, prog, module.entrypoint)
            assert expected in line, line


def test_semsplat_pseudo_labels_broken_classes_json(demo_town, capsys, monkeypatch):
    from semsplat_ns.scripts.pseudo_labels import main

    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5, writable=True)
    (scene / "classes.json").write_text(BROKEN_JSON)
    monkeypatch.setattr(sys, "argv", ["semsplat-pseudo-labels", "--data", str(scene), "--backend", "reproject"])
    line = _exits_with_one_line(capsys, "semsplat-pseudo-labels", main)
    assert f"{scene / 'classes.json'}: not valid JSON" in line
    assert not (scene / "train" / "pseudo").exists()


def test_semsplat_make_scene_existing_folder(tmp_path, capsys):
    from semsplat_ns.scripts.make_scene import entrypoint

    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "keep.txt").write_text("mine")
    line = _exits_with_one_line(capsys, "semsplat-make-scene", lambda: entrypoint([str(tmp_path / "scene")]))
    # The hint names the command-line flag, nothing else (not the Python keyword).
    hint = "already exists and is not empty (pass --overwrite to replace it)"
    assert line == f"semsplat-make-scene: error: {tmp_path / 'scene'} {hint}"
    assert (tmp_path / "scene" / "keep.txt").read_text() == "mine"


def test_semsplat_demo_bad_scene(tmp_path, capsys, monkeypatch):
    from semsplat_ns.scripts import demo

    monkeypatch.setattr(demo, "_run", lambda cmd: pytest.fail(f"ran {cmd} despite a bad scene"))
    monkeypatch.setattr(sys, "argv", ["semsplat-demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    line = _exits_with_one_line(capsys, "semsplat-demo", demo.entrypoint)
    assert f"scene {str(tmp_path / 'nowhere')!r} not found" in line


def test_semsplat_demo_failed_step_stops_with_its_code(tmp_path, capsys, monkeypatch):
    from semsplat_ns.scripts import demo

    with pytest.raises(SystemExit) as exited:
        demo._run([sys.executable, "-c", "import sys; sys.exit(2)"])
    assert exited.value.code == 2
    assert "semsplat-demo: error: " in capsys.readouterr().err


# ------------------------------------------------------------------------------ nerfstudio's commands


NS_COMMANDS = {
    "ns-eval": ["ns-eval", "--load-config", "{config}", "--output-path", "{root}/eval.json"],
    "ns-render": ["ns-render", "dataset", "--load-config", "{config}", "--output-path", "{root}/renders"],
    "ns-viewer": ["ns-viewer", "--load-config", "{config}"],
}
"""nerfstudio's commands that load the config.yml of a run on the broken scene."""


@pytest.fixture(scope="module")
def broken_run(demo_town, tmp_path_factory, console_scripts):
    """``ns-train semsplat --data brokentown`` (a bare name, found through $SEMSPLAT_DATA) whose classes.json
    is not JSON, and the config.yml of a run saved while the scene was intact (as ns-train saves it, before
    reading the scene), which the other commands (NS_COMMANDS) then load: each command's outcome (``done``)."""
    from semsplat_ns.config import semsplat_trainer_config

    root = tmp_path_factory.mktemp("broken_run")
    scene = demo_town(n_views=12, resolution=32, n_labelled=2, seed=5, writable=True).rename(root / "brokentown")
    (root / "work").mkdir()  # the commands run here, where no ./brokentown or ./data/brokentown exists
    config = semsplat_trainer_config(max_steps=1)
    config.pipeline.datamanager.data = scene
    config.output_dir, config.timestamp = root / "outputs", "saved"
    config.save_config()
    (scene / "classes.json").write_text(BROKEN_JSON)
    env = {k: v for k, v in os.environ.items() if k != "SEMSPLAT_TRACEBACK"}
    env["SEMSPLAT_DATA"] = str(root)
    config_path = config.get_base_dir() / "config.yml"
    assert config_path.is_file()
    args = ["ns-train", "semsplat", "--data", "brokentown", "--max-num-iterations", "1", "--vis", "tensorboard"]
    args += ["--machine.device-type", "cpu", "--output-dir", str(root / "outputs"), "--timestamp", "run"]
    commands = {"ns-train": (args, root / "work")}
    for name, command in NS_COMMANDS.items():
        commands[name] = ([part.format(config=config_path, root=root) for part in command], root / "work")
    done = console_scripts(commands, env, root / "logs", timeout=300)
    return dict(scene=scene, done=done, run=root / "outputs/brokentown/semsplat/run")


def test_ns_train_bad_scene_is_one_line(broken_run):
    done, scene = broken_run["done"]["ns-train"], broken_run["scene"]
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_error_line(done.stderr, "ns-train")
    assert line.startswith(f"ns-train: error: {scene / 'classes.json'}: not valid JSON (")
    # the scene is checked before nerfstudio prints its ~300-line config and saves it: the line stands alone
    assert "Traceback" not in done.stdout
    assert "TrainerConfig(" not in done.stdout and "Saving config" not in done.stdout, done.stdout[-2000:]
    assert not (broken_run["run"] / "config.yml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", list(NS_COMMANDS))
def test_nerfstudio_commands_bad_scene_is_one_line(broken_run, command):
    done = broken_run["done"][command]
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-3000:])
    line = _one_error_line(done.stderr, command)
    assert f"{broken_run['scene'] / 'classes.json'}: not valid JSON" in line
    assert json.loads((broken_run["scene"] / "meta.json").read_text())  # the scene is only read


# ----------------------------------------------------------------------------------- eval's table


def test_eval_tables_show_percent(capsys):
    from semsplat_ns.scripts.eval import print_result

    result = {
        "per_class_iou": {"Road": 0.5, "Sky": None},
        "miou": 0.411,
        "miou_present": 0.5,
        "acc": 0.872,
        "test_ms_per_view": 3.0,
        "test_ms_per_view_p95": 4.0,
        "n_views": 4,
        "n_gaussians": 100,
    }
    print_result(result)
    out = capsys.readouterr().out
    assert "41.10 %" in out and "87.20 %" in out and "50.00 %" in out


def test_make_scene_help_shows_defaults(capsys):
    from semsplat_ns.scripts.make_scene import entrypoint

    with pytest.raises(SystemExit) as exited:
        entrypoint(["--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    for default in ("(default: 40)", "(default: 96)", "(default: 0)", "(default: 3)", "(default: 10)"):
        assert default in help_text, help_text
    assert "--overwrite replace an existing scene folder (default: False)" in help_text
