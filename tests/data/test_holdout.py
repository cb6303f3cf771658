"""A scene without test/ through nerfstudio's machinery: the datamanager serves held-out train views as the
eval split (photos, no labels), as nerfstudio's own dataparsers do for data without a split."""

from __future__ import annotations

import shutil

from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
from semsplat_ns.data.irt_dataparser import IRTDataParserConfig


def test_datamanager_without_test_split(demo_town, capsys):
    scene = demo_town(n_views=20, resolution=48, n_labelled=2, seed=3, writable=True)
    shutil.rmtree(scene / "test")
    train_stems = sorted(p.stem for p in (scene / "train" / "color").iterdir())
    labelled = {p.stem for p in (scene / "train" / "rgb").iterdir()}
    config = SemSplatDataManagerConfig(dataparser=IRTDataParserConfig(data=scene, load_points=False, eval_interval=4))
    dm = config.setup(device="cpu")
    held = [stem for i, stem in enumerate(train_stems) if i % 4 == 0 and stem not in labelled]
    assert dm.eval_dataset.metadata["stems"] == held
    assert sorted(dm.train_dataset.metadata["stems"]) == sorted(set(train_stems) - set(held))
    assert len(dm.train_dataset) + len(dm.eval_dataset) == len(train_stems)
    camera, batch = dm.next_eval_image(step=0)
    assert "semantics" not in batch and batch["image"].shape[:2] == (48, 48)
    assert camera.width.item() == 48
    out = capsys.readouterr().out
    assert sum("holding out" in line for line in out.splitlines()) == 1
