"""benchmarks/profile_train_step.py on the CPU: the warnings it counts by the line that caused them, and the config it
trains (the registered preset). The sync debug run itself needs CUDA (torch's sync debug mode watches CUDA streams).

The counting is fed real warnings raised inside torch: ``F.softmax`` without ``dim`` warns from torch's own Python
code (torch/nn/functional.py), as a sync warns from inside torch's call; the count must land on the lines here that
called it, not on torch's.
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
import torch.nn.functional as F

from benchmarks.profile_train_step import (
    SYNC_WARNING,
    TORCH_DIR,
    KernelWindow,
    SyncLocations,
    _in_range,
    outside_torch,
    preset_config,
)

SOFTMAX_WARNING = "Implicit dimension choice for softmax"


def _softmax_without_dim() -> int:
    """Calls torch in a way that warns inside torch; returns the calling line."""
    F.softmax(torch.zeros(3))
    return inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]


def _two_callers():
    """Warns three times from one line and twice from another (through a helper); returns both lines."""
    first = second = 0
    for _ in range(3):
        F.softmax(torch.zeros(2))
        first = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    for _ in range(2):
        second = _softmax_without_dim()
    return first, second


def test_warnings_counted_at_the_line_outside_torch_that_caused_them():
    locations = SyncLocations(message=SOFTMAX_WARNING)
    with locations.recording():
        first, second = _two_callers()
    here = "tests/benchmarks/test_profile_train_step.py"
    assert dict(locations.counts) == {
        f"{here}:{first} (_two_callers)": 3,
        f"{here}:{second} (_softmax_without_dim)": 2,
    }
    # the stack kept with a location starts at the cause and goes on with its callers
    stack = locations.stacks[f"{here}:{second} (_softmax_without_dim)"]
    assert stack[0].endswith("(_softmax_without_dim)")
    assert stack[1].startswith(f"{here}:") and stack[1].endswith("(_two_callers)")
    summary = locations.summary(steps=4)
    assert summary["syncs"] == 5 and summary["syncs_per_step"] == 5 / 4
    assert [entry["count"] for entry in summary["locations"]] == [3, 2]  # most frequent first
    assert summary["locations"][0]["per_step"] == 3 / 4


def test_other_warnings_pass_through_uncounted():
    locations = SyncLocations()  # torch's sync warning only
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with locations.recording():
            F.softmax(torch.zeros(2))
            warnings.warn(f"not a sync: {SYNC_WARNING[:10]}", stacklevel=1)
    assert locations.total == 0 and not locations.counts
    assert len(shown) == 2 and SOFTMAX_WARNING in str(shown[0].message)


def test_torch_frames_are_not_causes():
    frame = inspect.currentframe()
    assert frame is not None and outside_torch(frame)
    torch_frames = []

    def hook(grad):
        caller = inspect.currentframe()
        while caller is not None:
            if not outside_torch(caller):
                torch_frames.append(caller.f_code.co_filename)
            caller = caller.f_back
        return grad

    value = torch.zeros(2, requires_grad=True)
    value.register_hook(hook)
    value.sum().backward()  # the hook runs under torch's backward (torch/_tensor.py, torch/autograd/__init__.py)
    assert any("/torch/autograd/" in name for name in torch_frames)
    assert all(name.startswith(TORCH_DIR) or name.startswith("<frozen") for name in torch_frames)


def test_profiles_the_registered_preset(tmp_path):
    from semsplat_ns.config import semsplat_preset_config
    from semsplat_ns.data.datamanager import SemSplatDataManagerConfig
    from semsplat_ns.model.semsplat_model import SemSplatModelConfig
    from semsplat_ns.schedule import PRESET_STEPS

    config = preset_config(tmp_path / "scene", "no-agg", 40, tmp_path / "runs")
    preset = semsplat_preset_config()
    model, datamanager = config.pipeline.model, config.pipeline.datamanager
    assert isinstance(model, SemSplatModelConfig) and isinstance(datamanager, SemSplatDataManagerConfig)
    assert isinstance(preset.pipeline.datamanager, SemSplatDataManagerConfig)
    assert config.max_num_iterations == 40 and preset.max_num_iterations == PRESET_STEPS
    # the schedule stays the preset's: its compressed model fields and learning-rate decays over PRESET_STEPS
    for name in ("stop_split_at", "warmup_length", "resolution_schedule", "sh_degree_interval", "refine_every"):
        assert getattr(config.pipeline.model, name) == getattr(preset.pipeline.model, name), name
    assert config.optimizers["means"]["scheduler"].max_steps == PRESET_STEPS
    assert model.agg2d_loss_weight == 0.0 and model.agg3d_loss_weight == 0.0
    assert datamanager.auto_pseudo_labels == preset.pipeline.datamanager.auto_pseudo_labels
    assert config.steps_per_save > 40 and config.steps_per_eval_image > 40
    assert config.optimizers_step_together and preset.optimizers_step_together


def test_the_optimizers_apart_variant_is_the_preset_stepping_per_group(tmp_path):
    config = preset_config(tmp_path / "scene", "optimizers-apart", 40, tmp_path / "runs")
    preset = preset_config(tmp_path / "scene", "semsplat", 40, tmp_path / "runs")
    assert not config.optimizers_step_together and preset.optimizers_step_together
    assert config.pipeline.model == preset.pipeline.model


def test_kernel_window_host_summary_counts_the_operators_each_step_launches():
    # The window's own start and stop sync CUDA; its summaries read any profiler, here one of host activity alone.
    window = KernelWindow(first=0, steps=2)
    window.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    x = torch.ones(64, 64)
    with window.profiler:
        for _ in range(2):  # two "steps": three adds and one matmul each
            y = x + 1
            y = y + 1
            y = y + 1
            torch.mm(y, y)
    window.steps = 2
    host = window.host_summary(top=5)
    by_name = {entry["name"]: entry for entry in host["host_ops"]}
    assert by_name["aten::add"]["calls_per_step"] == 3 and by_name["aten::mm"]["calls_per_step"] == 1
    assert host["aten_ops_per_step"] >= 4
    times = [entry["self_ms_per_step"] for entry in host["host_ops"]]
    assert times == sorted(times, reverse=True) and len(times) <= 5 and all(t > 0 for t in times)
    assert host["host_self_ms_per_step"] >= sum(times)
    # no device work in the window: nothing busy, no kernels
    window.wall_s = 0.01
    summary = window.summary()
    assert summary["gpu_busy_ms_per_step"] == 0 and summary["kernels"] == [] and summary["wall_ms_per_step"] == 5.0


class _ToyStep:
    """A "training step" of two phases, one inside the other, whose backward runs three autograd functions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.shift(x) * 2).sum()  # mul and sum here, add in shift

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


def test_operators_are_counted_in_the_innermost_phase_or_backward_function_around_them():
    from benchmarks.profile_train_step import ops_by_phase
    from benchmarks.step_trace import replace_attribute

    toy = _ToyStep()
    phases = [(toy, "forward", "forward"), (toy, "shift", "forward/shift")]
    undo = [replace_attribute(owner, name, functools.partial(_in_range, phase)) for owner, name, phase in phases]
    x = torch.ones(8, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(2):
            toy.forward(x).backward()  # the backward outside any phase
            torch.zeros(3)  # outside any phase, no autograd
    for restore in undo:
        restore()
    assert "forward" not in vars(toy) and toy.forward(x).item() == 32.0  # unwrapped
    events = profiler.events()
    assert events is not None
    summary = ops_by_phase(events, [phase for _, _, phase in phases], steps=2)
    rows = {row["name"]: row for row in summary["phases"]}
    assert rows["forward"]["aten_ops_per_step"] == 2  # mul, sum: the add is shift's, inner ops are not counted
    assert rows["forward/shift"]["aten_ops_per_step"] == 1
    assert rows["forward"]["host_ms_per_step"] >= rows["forward/shift"]["host_ms_per_step"] > 0
    assert rows["<outside any phase>"]["aten_ops_per_step"] >= 1  # zeros (and backward's seed gradient)
    nodes = {row["name"]: row for row in summary["backward_nodes"]}
    for node in ("SumBackward0", "MulBackward0", "AddBackward0"):
        assert nodes[f"backward node: {node}"]["calls_per_step"] == 1
        assert rows[f"backward node: {node}"]["host_ms_per_step"] > 0
    assert nodes["backward node: MulBackward0"]["host_ms_per_step"] > 0
    assert rows["backward node: MulBackward0"]["aten_ops_per_step"] >= 1  # the gradient's mul
