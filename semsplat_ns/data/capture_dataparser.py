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
re-triangulation. Every file a run needs is checked before training; a bad one stops parsing with one
:class:`~semsplat_ns.data.irt_io.IRTDataError` naming it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataparserOutputs
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParser, ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from PIL import Image

from semsplat_ns.console import CONSOLE
from semsplat_ns.data import irt_io
from semsplat_ns.data.capture_labels import (
    LABELS_DIR,
    PreparedLabel,
    describe_missing,
    list_labels,
    prepare_label,
    read_capture_classes,
)
from semsplat_ns.data.classes import SceneClasses
from semsplat_ns.data.irt_dataparser import IRTDataParser, IRTDataParserConfig
from semsplat_ns.data.irt_io import IRTDataError, resolve_scene_dir
from semsplat_ns.errors import UserInputError

Layout = Literal["irt", "nerfstudio", "colmap"]
"""The scene layouts ``semsplat-data`` reads."""

COLMAP_MODEL_DIRS = (Path("sparse/0"), Path("colmap/sparse/0"), Path("sparse"))
"""Where a COLMAP model is looked for in a capture, in order (COLMAP's own, ns-process-data's, a flat one)."""

FLAG = "--pipeline.datamanager.dataparser"
"""The ns-train prefix of this dataparser's options, for messages."""

SUPPORTED_CAMERA_TYPES = (CameraType.PERSPECTIVE, CameraType.FISHEYE, CameraType.FISHEYE624)
"""Camera types splatfacto can train on: nerfstudio's datamanager undistorts them into pinhole pictures."""

# Options of irt-data that a capture does not read; nerfstudio's parsers have their own (see _warn_irt_options).
_IRT_ONLY_OPTIONS = (
    "eval_interval",
    "orientation_method",
    "center_method",
    "auto_scale_poses",
    "scale_factor",
    "scene_scale",
)


def _has_colmap_model(folder: Path) -> bool:
    return (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file()


def detect_layout(data: Path) -> Tuple[Layout, Path]:
    """Tells what ``--data`` holds.

    Args:
        data: The resolved ``--data``: a folder, or a nerfstudio .json file.

    Returns:
        The layout and the file or folder that decided it: the scene folder (IRT), the transforms .json
        (nerfstudio) or the COLMAP model folder (colmap).

    Raises:
        IRTDataError: Nothing semsplat reads is there; the message lists what was looked for.
    """
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".json":
        return "nerfstudio", data
    if (data / "train").is_dir():
        return "irt", data
    if (data / "transforms.json").is_file():
        return "nerfstudio", data / "transforms.json"
    for model in COLMAP_MODEL_DIRS:
        if _has_colmap_model(data / model):
            return "colmap", data / model
    present = sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) if data.is_dir() else []
    raise IRTDataError(
        f"{data}: not a scene semsplat reads: no train/ (IRT scene, docs/IRT_LAYOUT.md), no transforms.json "
        f"(nerfstudio capture, ns-process-data) and no COLMAP model in {', '.join(f'{m}/' for m in COLMAP_MODEL_DIRS)} "
        f"(folder has: {', '.join(present[:12]) or 'nothing'})"
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


class _NerfstudioCapture(Nerfstudio):
    """nerfstudio's transforms.json parser, reading ``ply_file_path`` with plyfile instead of open3d.

    open3d is an optional dependency of nerfstudio that often fails to import (it needs system libraries);
    the points and their transform are the same.
    """

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float):
        from plyfile import PlyData

        vertex = PlyData.read(str(ply_file_path))["vertex"]
        if vertex.count == 0:
            return None
        xyz = torch.from_numpy(np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=-1).astype(np.float32))  # [P, 3]
        names = {prop.name for prop in vertex.properties}
        if {"red", "green", "blue"} <= names:
            rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=-1).astype(np.uint8)  # [P, 3]
        else:
            rgb = np.full((vertex.count, 3), 128, dtype=np.uint8)  # [P, 3] grey, as no colour is known
        # nerfstudio's own formula: the ply is in transforms.json's frame, so only transform_matrix applies.
        points = torch.cat((xyz, torch.ones_like(xyz[..., :1])), -1) @ transform_matrix.T  # [P, 3]
        return {"points3D_xyz": points * scale_factor, "points3D_rgb": torch.from_numpy(rgb)}


@dataclass(frozen=True)
class _CaptureSplit:
    """A split of a capture as nerfstudio parsed it, plus what semsplat adds."""

    outputs: DataparserOutputs
    stems: List[str]
    labels: List[Optional[PreparedLabel]]


@contextlib.contextmanager
def _nerfstudio_errors(source: Path, parser: str) -> Iterator[None]:
    """Turns what nerfstudio's parsers raise on bad input (asserts, KeyErrors, missing files) into one line."""
    try:
        yield
    except UserInputError:
        raise
    except FileNotFoundError as err:
        missing = err.filename or source
        raise IRTDataError(
            f"{missing}: file does not exist (nerfstudio's {parser} parser reads it for {source})"
        ) from None
    except (AssertionError, KeyError, ValueError, RuntimeError, IndexError, TypeError, OSError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise IRTDataError(f"{source}: nerfstudio's {parser} parser cannot read it: {detail}") from None


class SemSplatDataParser(IRTDataParser):
    """Delegates an IRT scene to irt-data (unchanged) and a capture to nerfstudio's parser for its format.

    For a capture, every split's outputs are nerfstudio's (cameras, distortion, split, dataparser transform and
    scale, seed points) with semsplat's metadata added: ``semantic_filenames`` (None for unlabelled images),
    ``pseudo_filenames``, ``boundary_filenames``, ``confidence_filenames`` (all None: captures have no pseudo
    labels yet), ``stems``, ``scene_dir``, ``class_names``, ``class_colors``, ``num_classes``, ``label_is_color``.
    """

    config: SemSplatDataParserConfig

    def __init__(self, config: SemSplatDataParserConfig):
        super().__init__(config=config)
        self._detected: Optional[Tuple[Layout, Path]] = None
        self._delegate: Optional[DataParser] = None
        self._parsed: Dict[Tuple[str, bool], DataparserOutputs] = {}
        self._splits: Dict[str, _CaptureSplit] = {}
        self._capture_classes: Optional[Tuple[SceneClasses, Dict[Path, np.ndarray]]] = None
        self._points: Optional[Dict[str, torch.Tensor]] = None
        self._label_files: Optional[Dict[str, Path]] = None
        self._announced = False

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
                models = [self.scene_dir / m for m in COLMAP_MODEL_DIRS if _has_colmap_model(self.scene_dir / m)]
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
                parser = _NerfstudioCapture(config=ns_config)
                # Without ply_file_path, nerfstudio would ASK whether to convert colmap/sparse/0 and rewrite
                # transforms.json; semsplat reads that model itself instead (_capture_points), asking nothing.
                parser.prompted_user = True
                parser.create_pc = False
                self._delegate = parser
            else:
                colmap_path = self.config.colmap.colmap_path
                if not _has_colmap_model(self.scene_dir / colmap_path):
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
                self._delegate = ColmapDataParser(colmap_config)
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
                with _nerfstudio_errors(source, name):
                    self._parsed[key] = parser.get_dataparser_outputs(split=ns_split)
            finally:
                parser.config.load_3D_points = saved  # type: ignore[attr-defined]
        return self._parsed[key]

    def _eval_split(self) -> str:
        """nerfstudio's name of the split that ``eval_split`` names."""
        return "test" if self.config.eval_split == "test" else "val"

    def _capture_split(self, ns_split: str) -> _CaptureSplit:
        """A checked split (cached). The first call checks the train split and an eval split together, so a bad
        file in either stops the run before anything is decoded."""
        if ns_split not in self._splits:
            eval_split = ns_split if ns_split != "train" else self._eval_split()
            train = self._parse("train", with_points=True)
            evaluation = self._parse(eval_split, with_points=False)
            self._check_capture(train, evaluation)
            for name, outputs in (("train", train), (eval_split, evaluation)):
                if name not in self._splits:
                    self._splits[name] = self._label_split(outputs)
            if self._points is None:
                points = {k: v for k, v in train.metadata.items() if k.startswith("points3D_")}
                self._points = points if points or not self.config.load_points else self._capture_points(train)
            self._announce(self._splits["train"], self._splits[eval_split])
        return self._splits[ns_split]

    def _labels(self) -> Dict[str, Path]:
        if self._label_files is None:
            self._label_files = list_labels(self.scene_dir / LABELS_DIR)
        return self._label_files

    def _check_capture(self, train: DataparserOutputs, evaluation: DataparserOutputs) -> None:
        """Checks the images, cameras and labels of a train and an eval split (one error naming the file)."""
        scene = self.scene_dir
        source, _ = self._source_name()
        all_images: List[Path] = list(
            dict.fromkeys([Path(p) for p in train.image_filenames + evaluation.image_filenames])
        )
        problem = describe_missing(all_images, f"image (listed by {source.name})")
        if problem:
            raise IRTDataError(problem)
        by_stem: Dict[str, Path] = {}
        for path in all_images:
            if path.stem in by_stem:
                raise IRTDataError(
                    f"{path}: two images share the stem {path.stem!r} ({by_stem[path.stem]}); labels/<stem>.png and "
                    "predictions are named by stem, so stems must be unique"
                )
            by_stem[path.stem] = path
        for outputs in (train, evaluation):
            for index, camera_type in enumerate(outputs.cameras.camera_type.view(-1).tolist()):
                if camera_type not in [t.value for t in SUPPORTED_CAMERA_TYPES]:
                    raise IRTDataError(
                        f"{source}: the camera of {Path(outputs.image_filenames[index]).name} is "
                        f"{CameraType(camera_type).name}; splatfacto trains on perspective and fisheye cameras only"
                    )
            self._check_photo_sizes(outputs, source)
        labels = self._labels()
        orphans = sorted(set(labels) - set(by_stem))
        if orphans:
            shown = ", ".join(sorted(by_stem)[:8]) + (", ..." if len(by_stem) > 8 else "")
            raise IRTDataError(
                f"{labels[orphans[0]]}: no image of the capture has the stem {orphans[0]!r} (labels/<stem>.png is "
                f"named after an image that {source.name} lists; its images: {shown})"
                + (f"; also {', '.join(orphans[1:5])}" if len(orphans) > 1 else "")
            )
        if not labels:
            raise IRTDataError(
                f"{scene / LABELS_DIR}: no label; semsplat needs at least one labels/<image stem>.png "
                "(8-bit PNG, class id in channel 0, 255 = ignore; docs/CAPTURES.md)"
            )
        train_stems = {Path(p).stem for p in train.image_filenames}
        if not train_stems & set(labels):
            layout = self.layout
            raise IRTDataError(
                f"{scene / LABELS_DIR}: every labelled image ({', '.join(sorted(labels)[:5])}) is in the evaluation "
                f"split nerfstudio chose; training needs at least one: label a training image, or choose the split "
                f"with {FLAG}.{layout}.eval-mode (e.g. all, or interval with {FLAG}.{layout}.eval-interval)"
            )

    @staticmethod
    def _check_photo_sizes(outputs: DataparserOutputs, source: Path) -> None:
        """Every photo's size (read from its header) against its camera's, which nerfstudio asserts later."""
        widths = outputs.cameras.width.view(-1).tolist()
        heights = outputs.cameras.height.view(-1).tolist()
        for path, width, height in zip(outputs.image_filenames, widths, heights):
            try:
                with Image.open(path) as image:
                    size = image.size
            except (OSError, SyntaxError, ValueError) as err:
                raise IRTDataError(f"{path}: cannot read the photo (not an image?): {err}") from None
            if size != (width, height):
                raise IRTDataError(
                    f"{path}: size {size[0]}x{size[1]} differs from its camera in {source.name} ({width}x{height})"
                )

    def _read_classes(self) -> Tuple[SceneClasses, Dict[Path, np.ndarray]]:
        """The capture's classes and every label decoded with them (cached)."""
        if self._capture_classes is None:
            self._capture_classes = read_capture_classes(self.scene_dir, list(self._labels().values()))
        return self._capture_classes

    def _label_split(self, outputs: DataparserOutputs) -> _CaptureSplit:
        """Stems and, for labelled images, the label file matched to nerfstudio's picture of the photo."""
        _, decoded = self._read_classes()
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
        return _CaptureSplit(outputs=outputs, stems=stems, labels=prepared)

    def _outputs(self, split: _CaptureSplit) -> DataparserOutputs:
        """nerfstudio's outputs of a split with semsplat's metadata (and the capture's seed points for train)."""
        classes, _ = self._read_classes()
        outputs = split.outputs
        count = len(outputs.image_filenames)
        none: List[Optional[Path]] = [None] * count
        metadata: Dict = dict(outputs.metadata)
        metadata.update(
            {
                "semantic_filenames": [label.path if label else None for label in split.labels],
                "pseudo_filenames": list(none),
                "boundary_filenames": list(none),
                "confidence_filenames": list(none),
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

    def _capture_points(self, outputs: DataparserOutputs) -> Dict[str, torch.Tensor]:
        """Seed points of a transforms.json capture without ply_file_path, from its colmap/sparse/0 model."""
        model = self.scene_dir / "colmap" / "sparse" / "0"
        points_file = next(
            (model / f"points3D{e}" for e in (".bin", ".txt") if (model / f"points3D{e}").is_file()), None
        )
        if self.layout != "nerfstudio" or points_file is None:
            return {}
        reader = ColmapDataParser(ColmapDataParserConfig(data=self.scene_dir, max_2D_matches_per_3D_point=0))
        transform = outputs.dataparser_transform.float()  # [3, 4] COLMAP world -> training frame
        with _nerfstudio_errors(points_file, "colmap"):
            points = reader._load_3D_points(model, transform, float(outputs.dataparser_scale))
        return {"points3D_xyz": points["points3D_xyz"], "points3D_rgb": points["points3D_rgb"]}

    def _announce(self, train: _CaptureSplit, evaluation: _CaptureSplit) -> None:
        """One console line on what the capture holds: layout, split sizes, labelled images, seed points."""
        if self._announced:
            return
        self._announced = True
        layout, source = self._detection()
        self._warn_irt_options(layout)
        labelled_train = [s for s, label in zip(train.stems, train.labels) if label]
        labelled_eval = [s for s, label in zip(evaluation.stems, evaluation.labels) if label]
        prepared = sorted({step for label in train.labels + evaluation.labels if label for step in label.steps})
        what = "a nerfstudio capture" if layout == "nerfstudio" else "a COLMAP model"
        eval_mode = getattr(self.config, layout).eval_mode
        line = (
            f"semsplat-data: {self.scene_dir} is {what} ({source.relative_to(self.scene_dir)}): "
            f"{len(train.stems)} training and {len(evaluation.stems)} evaluation images (nerfstudio's split: "
            f"{FLAG}.{layout}.eval-mode {eval_mode}, unless the capture lists its splits); "
            f"labelled: {len(labelled_train)} training ({', '.join(labelled_train[:6])}"
            f"{', ...' if len(labelled_train) > 6 else ''})"
        )
        if labelled_eval:
            line += f", {len(labelled_eval)} evaluation ({', '.join(labelled_eval[:6])}) for segmentation metrics"
        elif not evaluation.stems:
            line += "; nerfstudio's split left no evaluation image"
        else:
            line += (
                "; no evaluation image has a label, so evaluation gives RGB metrics only (label one of "
                f"{', '.join(evaluation.stems[:6])}{', ...' if len(evaluation.stems) > 6 else ''} for segmentation "
                "metrics)"
            )
        if prepared:
            line += f"; labels {' and '.join(prepared)} as nerfstudio's photos are (written to semsplat_labels/)"
        points = (self._points or {}).get("points3D_xyz")
        if not self.config.load_points:
            line += f"; seed points off ({FLAG}.load-points False)"
        elif points is None:
            line += "; no sparse points in the capture: splatfacto starts from random points"
        else:
            line += f"; {len(points)} seed points from the capture's sparse model"
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


def capture_layout(data: Union[str, Path]) -> Layout:
    """What a ``--data`` folder (or nerfstudio .json) holds, for commands that treat captures differently.

    Args:
        data: As ``ns-train --data`` takes it (a bare name is resolved as there).
    """
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() == ".json":
        return "nerfstudio"
    return detect_layout(resolve_scene_dir(path))[0]
