"""The ``semsplat-data`` dataparser: an IRT scene, a nerfstudio capture or a COLMAP model, told apart by its files.

``--data`` names a folder; the first match decides:

- IRT scene: it has ``train/`` (docs/IRT_LAYOUT.md); read exactly as ``irt-data`` reads it.
- nerfstudio capture: ``transforms.json`` (as ``ns-process-data`` writes it), or ``--data`` names a .json
  file; cameras, distortion, downscaled ``images_<N>/`` and the train/eval split come from nerfstudio's own
  ``nerfstudio-data`` parser.
- COLMAP model: ``sparse/0/``, ``colmap/sparse/0/`` or ``sparse/`` holding ``cameras.bin|txt`` beside an
  ``images/`` folder; read by nerfstudio's own ``colmap`` parser.

A capture's labels are ``<capture>/labels/<image stem>.png`` for a few images, with optional
``<capture>/classes.json`` (formats: docs/CAPTURES.md). The eval split is nerfstudio's for the format
(transforms.json: ``--pipeline.datamanager.dataparser.nerfstudio.eval-mode``, default fraction; COLMAP:
``...dataparser.colmap.eval-mode``, default interval); segmentation metrics use the eval images that have a
label, and a console line says when none does. Seed points come from the capture's own sparse model
(transforms.json's ``ply_file_path``, else ``colmap/sparse/0``; a COLMAP model's ``points3D``), never from
re-triangulation; fewer than the IRT path's :data:`~semsplat_ns.data.points.MIN_SEED_POINTS` (a missing or empty
points file counting as 0) seed nothing, so splatfacto starts from random points, and one
:class:`~semsplat_ns.data.points.FewPointsWarning` names the file and the count. Every file a run needs is
checked before training; a bad one stops parsing with one :class:`~semsplat_ns.data.irt_io.IRTDataError` naming
it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataparserOutputs
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from semsplat_ns.console import CONSOLE
from semsplat_ns.data import irt_io
from semsplat_ns.data.capture_checks import CaptureSplit, announce_line, check_capture, pseudo_label_files
from semsplat_ns.data.capture_labels import LABELS_DIR, PreparedLabel, list_labels, prepare_label, read_capture_classes
from semsplat_ns.data.capture_sources import (
    COLMAP_MODEL_DIRS,
    FLAG,
    ColmapCapture,
    Layout,
    NerfstudioCapture,
    capture_layout,
    colmap_points_file,
    detect_layout,
    has_colmap_model,
    model_files,
    named_ply,
    nerfstudio_errors,
)
from semsplat_ns.data.classes import SceneClasses
from semsplat_ns.data.irt_dataparser import IRTDataParser, IRTDataParserConfig
from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.data.points import MIN_SEED_POINTS, FewPointsWarning

__all__ = ["SemSplatDataParserConfig", "SemSplatDataParser", "capture_layout", "detect_layout", "Layout"]

# Options of irt-data that a capture does not read; nerfstudio's parsers have their own (see _warn_irt_options).
_IRT_ONLY_OPTIONS = (
    "eval_interval",
    "orientation_method",
    "center_method",
    "auto_scale_poses",
    "scale_factor",
    "scene_scale",
)


def _default_nerfstudio() -> NerfstudioDataParserConfig:
    return NerfstudioDataParserConfig()


def _default_colmap() -> ColmapDataParserConfig:
    return ColmapDataParserConfig()


@dataclass
class SemSplatDataParserConfig(IRTDataParserConfig):
    """Reads an IRT scene, a nerfstudio capture (transforms.json) or a COLMAP model, plus labels/<stem>.png.

    The options inherited from irt-data apply to IRT scenes; ``data``, ``eval_split`` and ``load_points`` apply
    to every layout. A capture's cameras, split and pose normalisation are set by the options of nerfstudio's
    own parser for its format, under ``nerfstudio.`` and ``colmap.``.
    """

    _target: Type = field(default_factory=lambda: SemSplatDataParser)
    """Class this config instantiates."""
    layout: Literal["auto", "irt", "nerfstudio", "colmap"] = "auto"
    """What --data holds; auto: an IRT scene if it has train/, else a nerfstudio capture if it has
    transforms.json (or is a .json file), else a COLMAP model in sparse/0, colmap/sparse/0 or sparse/."""
    nerfstudio: NerfstudioDataParserConfig = field(default_factory=_default_nerfstudio)
    """nerfstudio's nerfstudio-data options for a transforms.json capture (eval-mode, train-split-fraction,
    downscale-factor, orientation-method, ...). Its data and load-3D-points are ignored: --data names the
    capture, load-points says whether to seed from its sparse points."""
    colmap: ColmapDataParserConfig = field(default_factory=_default_colmap)
    """nerfstudio's colmap options for a COLMAP capture (eval-mode, eval-interval, images-path, downscale-factor,
    ...). Its colmap-path is used where it exists, else the model is looked for in sparse/0, colmap/sparse/0,
    sparse/; its data and load-3D-points are ignored as for nerfstudio."""


class SemSplatDataParser(IRTDataParser):
    """Delegates an IRT scene to irt-data (unchanged) and a capture to nerfstudio's parser for its format.

    For a capture, every split's outputs are nerfstudio's (cameras, distortion, split, dataparser transform and
    scale, seed points) with semsplat's metadata added: ``semantic_filenames`` (None for unlabelled images),
    ``pseudo_filenames``, ``boundary_filenames``, ``confidence_filenames`` (training images with files in
    ``<capture>/semsplat_pseudo/``, checked; None elsewhere), ``stems``, ``scene_dir``, ``class_names``,
    ``class_colors``, ``num_classes``, ``label_is_color``.
    """

    config: SemSplatDataParserConfig

    def __init__(self, config: SemSplatDataParserConfig):
        super().__init__(config=config)
        self._detected: Optional[Tuple[Layout, Path]] = None
        self._delegate: Optional[DataParser] = None
        self._parsed: Dict[Tuple[str, bool], DataparserOutputs] = {}
        self._splits: Dict[str, CaptureSplit] = {}
        self._capture_classes: Optional[Tuple[SceneClasses, Dict[Path, np.ndarray]]] = None
        self._points: Optional[Dict[str, torch.Tensor]] = None
        self._too_few: Optional[int] = None  # how many sparse points there were when too few to seed
        self._label_files: Optional[Dict[str, Path]] = None
        self._announced = False
        self.announce = True
        """Print the console line on what the capture holds (once, when it is first parsed)."""

    @property
    def scene_dir(self) -> Path:
        """The resolved scene or capture folder (the folder of the .json file when ``--data`` names one)."""
        if self._scene_dir is None:
            data = Path(self.config.data).expanduser()
            self._scene_dir = (
                data.parent if data.is_file() and data.suffix.lower() == ".json" else resolve_scene_dir(data)
            )
        return self._scene_dir

    @property
    def layout(self) -> Layout:
        """What ``--data`` holds (detected once, or as ``layout`` forces)."""
        return self._detection()[0]

    @property
    def source(self) -> Path:
        """The file or folder that decided the layout: the scene folder (IRT), the transforms .json (nerfstudio)
        or the COLMAP model folder (colmap)."""
        return self._detection()[1]

    def camera_files(self) -> List[Path]:
        """The files of a capture that define its cameras and sparse points (for input digests)."""
        layout, source = self._detection()
        if layout == "colmap":
            delegate = self._delegate_parser()
            return model_files(self.scene_dir / delegate.config.colmap_path)  # type: ignore[attr-defined]
        files = [source, *model_files(self.scene_dir / "colmap" / "sparse" / "0")]
        ply = named_ply(source)
        return files + ([ply] if ply is not None and ply.is_file() else [])

    def _detection(self) -> Tuple[Layout, Path]:
        if self._detected is None:
            data = Path(self.config.data).expanduser()
            source = data if data.is_file() and data.suffix.lower() == ".json" else self.scene_dir
            forced = self.config.layout
            if forced == "auto":
                self._detected = detect_layout(source)
            elif forced == "irt":
                self._detected = ("irt", self.scene_dir)
            elif forced == "nerfstudio":
                self._detected = ("nerfstudio", source if source.is_file() else source / "transforms.json")
            else:
                models = [self.scene_dir / m for m in COLMAP_MODEL_DIRS if has_colmap_model(self.scene_dir / m)]
                if not models:
                    raise IRTDataError(
                        f"{self.scene_dir}: {FLAG}.layout colmap, but no COLMAP model (cameras.bin|txt) in "
                        f"{', '.join(f'{m}/' for m in COLMAP_MODEL_DIRS)}"
                    )
                self._detected = ("colmap", models[0])
        return self._detected

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if self.layout == "irt":
            return super()._generate_dataparser_outputs(split, **kwargs)
        if split == "train":
            ns_split = "train"
        elif split in ("val", "test", "inference"):
            # As irt-data: eval_split names the evaluation views whichever of val/test nerfstudio asks for.
            ns_split = self._eval_split()
        else:
            raise ValueError(f"semsplat-data: unknown split {split!r}; expected 'train', 'val' or 'test'")
        return self._outputs(self._capture_split(ns_split))

    # ------------------------------------------------------------------------------------- captures

    def _delegate_parser(self) -> DataParser:
        """nerfstudio's parser for the capture's format, configured from this config (built once)."""
        if self._delegate is None:
            layout, source = self._detection()
            if layout == "nerfstudio":
                ns_config = replace(self.config.nerfstudio, data=source, load_3D_points=self.config.load_points)
                parser = NerfstudioCapture(config=ns_config)
                # Without ply_file_path, nerfstudio would ASK whether to convert colmap/sparse/0 and rewrite
                # transforms.json; semsplat reads that model itself instead (_capture_points), asking nothing.
                parser.prompted_user = True
                parser.create_pc = False
                self._delegate = parser
            else:
                colmap_path = self.config.colmap.colmap_path
                if not has_colmap_model(self.scene_dir / colmap_path):
                    colmap_path = source.relative_to(self.scene_dir)
                has_points = any(
                    (self.scene_dir / colmap_path / f"points3D{ext}").is_file() for ext in (".bin", ".txt")
                )
                colmap_config = replace(
                    self.config.colmap,
                    data=self.scene_dir,
                    colmap_path=colmap_path,
                    load_3D_points=self.config.load_points and has_points,
                )
                self._delegate = ColmapCapture(colmap_config)
        return self._delegate

    def _source_name(self) -> Tuple[Path, str]:
        """The file or folder nerfstudio reads, and its parser's name (for messages)."""
        layout, source = self._detection()
        return source, "nerfstudio-data" if layout == "nerfstudio" else "colmap"

    def _parse(self, ns_split: str, with_points: bool) -> DataparserOutputs:
        """nerfstudio's outputs for a split (cached); points only when asked, so they are read once."""
        key = (ns_split, with_points)
        if key not in self._parsed:
            parser = self._delegate_parser()
            source, name = self._source_name()
            saved = parser.config.load_3D_points  # type: ignore[attr-defined]
            parser.config.load_3D_points = saved and with_points  # type: ignore[attr-defined]
            try:
                with nerfstudio_errors(source, name):
                    self._parsed[key] = parser.get_dataparser_outputs(split=ns_split)
            finally:
                parser.config.load_3D_points = saved  # type: ignore[attr-defined]
        return self._parsed[key]

    def _eval_split(self) -> str:
        """nerfstudio's name of the split that ``eval_split`` names."""
        return "test" if self.config.eval_split == "test" else "val"

    def _capture_split(self, ns_split: str) -> CaptureSplit:
        """A checked split (cached). The first call checks the train split and an eval split together, so a bad
        file in either stops the run before anything is decoded."""
        if ns_split not in self._splits:
            eval_split = ns_split if ns_split != "train" else self._eval_split()
            train = self._parse("train", with_points=True)
            evaluation = self._parse(eval_split, with_points=False)
            layout, source = self._detection()
            check_capture(self.scene_dir, source, layout, train, evaluation, self._labels())
            for name, outputs in (("train", train), (eval_split, evaluation)):
                if name not in self._splits:
                    self._splits[name] = self._label_split(outputs, with_pseudo=name == "train")
            if self._points is None:
                self._points = self._capture_seed_points(train) if self.config.load_points else {}
            self._announce(self._splits["train"], self._splits[eval_split])
        return self._splits[ns_split]

    def _labels(self) -> Dict[str, Path]:
        if self._label_files is None:
            self._label_files = list_labels(self.scene_dir / LABELS_DIR)
        return self._label_files

    def _read_classes(self) -> Tuple[SceneClasses, Dict[Path, np.ndarray]]:
        """The capture's classes and every label decoded with them (cached)."""
        if self._capture_classes is None:
            self._capture_classes = read_capture_classes(self.scene_dir, list(self._labels().values()))
        return self._capture_classes

    def _label_split(self, outputs: DataparserOutputs, with_pseudo: bool) -> CaptureSplit:
        """Stems and, for labelled images, the label file matched to nerfstudio's picture of the photo; with
        ``with_pseudo`` (the training split) also the checked files of ``<capture>/semsplat_pseudo/``."""
        classes, decoded = self._read_classes()
        labels = self._labels()
        stems = [Path(p).stem for p in outputs.image_filenames]
        prepared: List[Optional[PreparedLabel]] = []
        for index, stem in enumerate(stems):
            label_path = labels.get(stem)
            if label_path is None:
                prepared.append(None)
                continue
            ids = decoded[label_path]  # [H, W]
            photo = Path(outputs.image_filenames[index])
            size = irt_io.read_photo_size(photo)  # decodes the whole photo: a truncated file stops here
            camera = outputs.cameras[index].reshape(())
            prepared.append(prepare_label(self.scene_dir, label_path, ids, photo, size, camera))
        if not with_pseudo:
            return CaptureSplit(outputs=outputs, stems=stems, labels=prepared)
        pseudo, boundary, confidence = pseudo_label_files(
            self.scene_dir, outputs, len(classes.names), self.config.load_pseudo_labels
        )
        return CaptureSplit(outputs, stems, prepared, pseudo=pseudo, boundary=boundary, confidence=confidence)

    def _outputs(self, split: CaptureSplit) -> DataparserOutputs:
        """nerfstudio's outputs of a split with semsplat's metadata (and the capture's seed points for train)."""
        classes, _ = self._read_classes()
        outputs = split.outputs
        none: List[Optional[Path]] = [None] * len(outputs.image_filenames)
        # Seed points only as _capture_seed_points kept them (nerfstudio's parser put its own in the metadata).
        metadata: Dict = {k: v for k, v in outputs.metadata.items() if not k.startswith("points3D_")}
        metadata.update(
            {
                "semantic_filenames": [label.path if label else None for label in split.labels],
                "pseudo_filenames": list(split.pseudo or none),
                "boundary_filenames": list(split.boundary or none),
                "confidence_filenames": list(split.confidence or none),
                "stems": list(split.stems),
                "scene_dir": self.scene_dir,
                "class_names": list(classes.names),
                "class_colors": classes.colors.copy(),
                "num_classes": len(classes.names),
                "label_is_color": classes.label_is_color,
            }
        )
        if split is self._splits.get("train") and self._points:
            metadata.update(self._points)
        return replace(outputs, metadata=metadata)

    def _points_file(self) -> Optional[Path]:
        """Where the capture's seed points come from: the file transforms.json's ``ply_file_path`` names, else the
        ``points3D`` file of the COLMAP model (the model's folder when it has none); None without a sparse model."""
        layout, source = self._detection()
        if layout == "colmap":
            model = self.scene_dir / self._delegate_parser().config.colmap_path  # type: ignore[attr-defined]
            return colmap_points_file(model) or model
        ply = named_ply(source)
        if ply is not None:
            return ply
        model = self.scene_dir / "colmap" / "sparse" / "0"
        return colmap_points_file(model) or (model if has_colmap_model(model) else None)

    def _capture_seed_points(self, train: DataparserOutputs) -> Dict[str, torch.Tensor]:
        """The capture's sparse points (training frame), or none when they are fewer than
        :data:`~semsplat_ns.data.points.MIN_SEED_POINTS`, the IRT path's threshold (random initialisation, as for an
        IRT scene whose triangulation gives too few): a missing or empty points file counts as 0 points, and one
        :class:`~semsplat_ns.data.points.FewPointsWarning` names the file and the count. A capture without any
        sparse model gets no warning (the console line says splatfacto starts from random points)."""
        points_file = self._points_file()
        if points_file is None:
            return {}
        # nerfstudio's parser read ply_file_path or the COLMAP model's points; semsplat reads colmap/sparse/0 of a
        # transforms.json capture that names no ply (see _delegate_parser).
        points = {k: v for k, v in train.metadata.items() if k.startswith("points3D_")}
        if self.layout == "nerfstudio" and named_ply(self.source) is None and points_file.is_file():
            points = self._capture_points(train, points_file)
        count = len(points["points3D_xyz"]) if "points3D_xyz" in points else 0
        if count >= MIN_SEED_POINTS:
            return points
        self._too_few = count
        if points_file.is_file():
            what = f"the capture's sparse model holds {count} points"
        elif points_file.is_dir():
            what = "no points3D.bin or .txt in this COLMAP model, so the capture's sparse model holds 0 points"
        else:
            what = "no such file (transforms.json's ply_file_path), so the capture's sparse model holds 0 points"
        warnings.warn(
            f"{points_file}: {what} (fewer than {MIN_SEED_POINTS}); random initialisation will be used, and pseudo "
            "labels get no depth from them.",
            FewPointsWarning,
            stacklevel=2,
        )
        return {}

    def _capture_points(self, outputs: DataparserOutputs, points_file: Path) -> Dict[str, torch.Tensor]:
        """Seed points of a transforms.json capture without ply_file_path, from its colmap/sparse/0 model."""
        reader = ColmapCapture(ColmapDataParserConfig(data=self.scene_dir, max_2D_matches_per_3D_point=0))
        transform = outputs.dataparser_transform.float()  # [3, 4] COLMAP world -> training frame
        with nerfstudio_errors(points_file, "colmap"):
            points = reader._load_3D_points(points_file.parent, transform, float(outputs.dataparser_scale))
        return {"points3D_xyz": points["points3D_xyz"], "points3D_rgb": points["points3D_rgb"]}

    def _announce(self, train: CaptureSplit, evaluation: CaptureSplit) -> None:
        """One console line on what the capture holds (:func:`~semsplat_ns.data.capture_checks.announce_line`)."""
        if self._announced:
            return
        self._announced = True
        layout, source = self._detection()
        self._warn_irt_options(layout)
        if not self.announce:
            return
        eval_mode = getattr(self.config, layout).eval_mode
        points = (self._points or {}).get("points3D_xyz")
        points_array = None if points is None else points.numpy()
        line = announce_line(
            self.scene_dir,
            layout,
            source,
            eval_mode,
            train,
            evaluation,
            points_array,
            self.config.load_points,
            too_few=self._too_few,
        )
        CONSOLE.print(line, markup=False, highlight=False, soft_wrap=True)

    def _warn_irt_options(self, layout: Layout) -> None:
        """Says which irt-data options were set but do not apply to a capture, and what does."""
        defaults = IRTDataParserConfig()
        for name in _IRT_ONLY_OPTIONS:
            if getattr(self.config, name) == getattr(defaults, name):
                continue
            option = name.replace("_", "-")
            CONSOLE.print(
                f"semsplat-data: {FLAG}.{option} applies to IRT scenes only; for this capture use "
                f"{FLAG}.{layout}.{option}"
                + ("" if name != "eval_interval" else f" (with {FLAG}.{layout}.eval-mode interval)"),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
