"""Every command that takes a scene resolves a bare name as ``ns-train --data`` does ($SEMSPLAT_DATA/<name>,
then ./data/<name>), and says where it looked when nothing is there.

ns-train itself: tests/data/test_irt_dataparser.py (the resolver) and tests/scripts/test_user_errors.py (a
real ns-train, ns-eval, ns-render and ns-viewer given a bare name). End to end through pseudo labels and
semsplat-eval: tests/scripts/test_umask.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from semsplat_ns.data.irt_io import IRTDataError
from semsplat_ns.errors import EXIT_CODE


@pytest.fixture
def scenes(demo_town, tmp_path, monkeypatch):
    """$SEMSPLAT_DATA/townx holds a scene; the working folder has no ./townx and no ./data/townx."""
    root = tmp_path / "scenes"
    root.mkdir()
    scene = root / "townx"
    shutil.copytree(demo_town(n_views=12, resolution=32, n_labelled=2, seed=5), scene)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SEMSPLAT_DATA", str(root))
    return SimpleNamespace(root=root, scene=scene, work=work)


def _not_found_line(capsys, call, prog: str, name: str, scenes) -> str:
    with pytest.raises(SystemExit) as exited:
        call()
    assert exited.value.code == EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: scene '{name}' not found; looked in: "), err
    # every place, in order: as given, $SEMSPLAT_DATA/<name>, ./data/<name>
    places = [str(scenes.work / name), str(scenes.root / name), str(scenes.work / "data" / name)]
    assert err.index(places[0]) < err.index(places[1]) < err.index(places[2]), err
    return err


def test_pseudo_labels_bare_name(scenes, capsys, monkeypatch):
    from semsplat_ns.scripts import pseudo_labels

    seen = []
    monkeypatch.setattr(pseudo_labels, "run", lambda args: seen.append(args.data) or {})
    monkeypatch.setattr(pseudo_labels, "_print_summary", lambda record, meta_path: seen.append(meta_path))
    monkeypatch.setattr(sys, "argv", ["semsplat-pseudo-labels", "--data", "townx", "--backend", "reproject"])
    pseudo_labels.main()
    assert seen == [scenes.scene, scenes.scene / "train" / "pseudo" / "meta.json"]
    monkeypatch.setattr(sys, "argv", ["semsplat-pseudo-labels", "--data", "towny", "--backend", "reproject"])
    _not_found_line(capsys, pseudo_labels.main, "semsplat-pseudo-labels", "towny", scenes)


def _run_config(data) -> SimpleNamespace:
    """The parts of a saved TrainerConfig that semsplat-eval reads before building the pipeline."""
    datamanager = SimpleNamespace(data=data, dataparser=SimpleNamespace(data=Path(), eval_split="test"))
    return SimpleNamespace(pipeline=SimpleNamespace(datamanager=datamanager))


def test_eval_resolves_the_runs_scene_and_data(scenes, tmp_path):
    from semsplat_ns.scripts.eval import EvalArgs, _scene_of

    args = EvalArgs(load_config=tmp_path / "run" / "config.yml")
    assert _scene_of(_run_config(Path("townx")), args) == scenes.scene  # as ns-train saved it: a bare name
    shutil.move(str(scenes.scene), str(scenes.root / "moved"))
    with pytest.raises(IRTDataError) as err:
        _scene_of(_run_config(Path("townx")), args)
    assert str(scenes.root / "townx") in str(err.value) and "--data evaluates on another scene" in str(err.value)
    moved = EvalArgs(load_config=args.load_config, data=Path("moved"))
    assert _scene_of(_run_config(Path("townx")), moved) == scenes.root / "moved"
    shutil.rmtree(scenes.root / "moved" / "test")
    with pytest.raises(IRTDataError) as err:
        _scene_of(_run_config(Path("townx")), moved)
    message = str(err.value)
    assert f"{scenes.root / 'moved' / 'test'}: split folder does not exist" in message
    assert f"ns-eval --load-config {args.load_config}" in message  # how to go on without it


def test_demo_bare_name_and_missing_test_split(scenes, capsys, monkeypatch, tmp_path):
    from semsplat_ns.scripts import demo

    commands = []
    monkeypatch.setattr(demo, "_run", commands.append)
    monkeypatch.setattr(sys, "argv", ["semsplat-demo", "--data", "townx", "--out", str(tmp_path / "demo")])
    demo.entrypoint()
    names = [Path(cmd[0]).name for cmd in commands]
    assert names == ["ns-train", "semsplat-eval", "ns-render"]  # no semsplat-make-scene: the scene exists
    train = commands[0]
    assert train[train.index("--data") + 1] == str(scenes.scene)
    monkeypatch.setattr(sys, "argv", ["semsplat-demo", "--data", "towny", "--out", str(tmp_path / "demo")])
    _not_found_line(capsys, demo.entrypoint, "semsplat-demo", "towny", scenes)
    # A scene without test/: stopped before training, with the way to train without it.
    shutil.rmtree(scenes.scene / "test")
    commands.clear()
    monkeypatch.setattr(sys, "argv", ["semsplat-demo", "--data", "townx", "--out", str(tmp_path / "demo")])
    with pytest.raises(SystemExit):
        demo.entrypoint()
    err = capsys.readouterr().err
    assert commands == [] and f"ns-train semsplat --data {scenes.scene}" in err
