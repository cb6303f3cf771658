"""nerfstudio's optimisers with their fused Adam steps taken together: one pass per training step instead of one
``Optimizer.step`` per parameter group.

splatfacto keeps one optimiser per Gaussian attribute (gsplat's densification edits each attribute's Adam state),
so a semsplat step runs nine ``Adam.step`` calls (six Gaussian attributes, the semantic features, the camera
optimiser, the transfer head). Each one pays Python around the kernel: the profiler and hook wrappers, the lazy
state check, the grad scaler's pass-through, torch's regrouping of one tensor by device and dtype. On the GPU box
that host time, not the GPU, sets the step rate (issue #13: GPU busy ~6.6 ms of a ~13.5 ms step).

:class:`SteppedTogetherOptimizers` keeps nerfstudio's optimisers, schedulers and checkpoints as they are, and the
optimisers dict that gsplat's strategy edits. Only the step changes: the Adam optimisers that qualify
(:func:`steps_together`) are stepped by one call of torch's functional fused Adam per set of hyper-parameters
(:func:`step_fused_adams`), which computes what each ``Adam.step`` computes, bit for bit; any other optimiser, or
any step of one that does not qualify (its first step, which creates its state; a grad scaler that scales; a
``max_norm``), goes through nerfstudio's own code.
"""

from __future__ import annotations

import importlib
from typing import Dict, Iterable, List, Sequence, Tuple

import torch
from nerfstudio.engine.optimizers import Optimizers
from torch.amp.grad_scaler import GradScaler
from torch.cuda.amp.grad_scaler import GradScaler as NerfstudioGradScaler  # the type nerfstudio's methods name
from torch.optim.adam import adam as functional_adam

TORCH_OPTIMIZER = importlib.import_module("torch.optim.optimizer")
"""torch's optimiser module, which holds the global step hooks (``torch.optim`` removes the name of the module)."""

FUSED_ADAM_KERNEL = getattr(torch, "_fused_adam_", None)
"""torch's fused Adam kernel (the op its functional fused Adam launches), or None in a torch without it."""

HyperParameters = Tuple[float, float, float, float, float]
"""(lr, beta1, beta2, eps, weight_decay) of a parameter group."""


def steps_together(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer``'s next step can be taken by :func:`step_fused_adams`.

    True for a plain ``torch.optim.Adam`` (not a subclass) whose groups use the fused kernel with the defaults
    otherwise (no amsgrad, maximize, capturable, differentiable or decoupled weight decay, a float lr), with no
    step hooks and no grad scaler state attached, and whose every parameter with a gradient has its Adam state
    already (torch creates the state on the first step; that step stays torch's own).
    """
    if type(optimizer) is not torch.optim.Adam:
        return False
    # the hooks Optimizer.step would run, and the scale a GradScaler would hand the fused kernel
    hooks = (
        getattr(optimizer, "_optimizer_step_pre_hooks", None),
        getattr(optimizer, "_optimizer_step_post_hooks", None),
        getattr(TORCH_OPTIMIZER, "_global_optimizer_pre_hooks", None),
        getattr(TORCH_OPTIMIZER, "_global_optimizer_post_hooks", None),
    )
    if any(hooks) or getattr(optimizer, "grad_scale", None) is not None:
        return False
    for group in optimizer.param_groups:
        if not group.get("fused") or torch.is_tensor(group["lr"]):
            return False
        if any(group.get(flag) for flag in ("amsgrad", "maximize", "capturable", "differentiable")):
            return False
        if group.get("decoupled_weight_decay"):
            return False
        for param in group["params"]:
            if param.grad is not None and not optimizer.state.get(param):
                return False
    return True


def step_fused_adams(optimizers: Iterable[torch.optim.Adam]) -> None:
    """One Adam step of each of ``optimizers`` (all qualifying, :func:`steps_together`), taken together.

    The parameters with a gradient are batched by hyper-parameters, device and dtype across the optimisers. Every
    step counter is advanced by one ``_foreach_add_`` per device, then each batch is one launch of torch's fused Adam
    kernel (``torch._fused_adam_``), on the same state tensors (``optimizer.state``) ``Adam.step`` would use: what
    torch's functional fused Adam does per call (count, then kernel), without its regrouping of the tensors by device
    and dtype on every call, and with one count for all batches instead of one per batch. Parameters without a
    gradient are left alone, as ``Adam.step`` does. Where torch has no such kernel, each batch goes through torch's
    functional fused Adam.

    Args:
        optimizers: Adam optimisers whose steps :func:`steps_together` allows.
    """
    # (hyper-parameters, device, dtype) -> (params, grads, exp_avgs, exp_avg_sqs, steps)
    batches: Dict[Tuple[HyperParameters, torch.device, torch.dtype], Tuple[List[torch.Tensor], ...]] = {}
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            beta1, beta2 = group["betas"]
            hyper: HyperParameters = (group["lr"], beta1, beta2, group["eps"], group["weight_decay"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = optimizer.state[param]
                key = (hyper, param.device, param.dtype)
                params, grads, exp_avgs, exp_avg_sqs, steps = batches.setdefault(key, ([], [], [], [], []))
                params.append(param)
                grads.append(param.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
    fused_kernel = FUSED_ADAM_KERNEL
    with torch.no_grad():  # as Optimizer.step: the update is not part of any graph
        if fused_kernel is None:
            for ((lr, beta1, beta2, eps, weight_decay), _, _), (params, grads, avgs, avg_sqs, steps) in batches.items():
                functional_adam(
                    params,
                    grads,
                    avgs,
                    avg_sqs,
                    [],
                    steps,
                    fused=True,
                    amsgrad=False,
                    beta1=beta1,
                    beta2=beta2,
                    lr=lr,
                    weight_decay=weight_decay,
                    eps=eps,
                    maximize=False,
                )
            return
        counters: Dict[torch.device, List[torch.Tensor]] = {}
        for (_, device, _), tensors in batches.items():
            counters.setdefault(device, []).extend(tensors[4])
        for device_counters in counters.values():
            torch._foreach_add_(device_counters, 1)  # pyright: ignore[reportPrivateImportUsage]
        for ((lr, beta1, beta2, eps, weight_decay), _, _), (
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
        ) in batches.items():
            fused_kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                eps=eps,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )


class SteppedTogetherOptimizers(Optimizers):
    """nerfstudio's :class:`~nerfstudio.engine.optimizers.Optimizers` whose qualifying fused Adam steps are taken in
    one pass (:func:`step_fused_adams`) and whose gradients are cleared without ``Optimizer.zero_grad``'s wrappers.

    Made from a set-up ``Optimizers`` (:meth:`of`): the same optimisers, schedulers, parameters and config objects,
    so checkpoints, schedulers and gsplat's strategy see nothing different.
    """

    @classmethod
    def of(cls, optimizers: Optimizers) -> SteppedTogetherOptimizers:
        """The optimisers of ``optimizers`` (shared, not copied), stepped together.

        Args:
            optimizers: nerfstudio's optimisers as ``Trainer.setup_optimizers`` made them.
        """
        together = cls.__new__(cls)  # not __init__: that would make new optimisers from the config
        together.__dict__.update(vars(optimizers))
        return together

    def zero_grad_some(self, param_groups: List[str]) -> None:
        """Clears the gradients of the given groups' optimisers (set to None, as ``zero_grad()`` does by default).

        Reads the parameters from each optimiser, not from ``self.parameters``: gsplat's densification replaces
        the Gaussian parameters in the optimisers, and ``self.parameters`` keeps the ones of the setup.
        """
        for name in param_groups:
            for group in self.optimizers[name].param_groups:
                for param in group["params"]:
                    param.grad = None

    def optimizer_scaler_step_some(self, grad_scaler: NerfstudioGradScaler, param_groups: List[str]) -> None:
        """nerfstudio's step of the given groups; the qualifying Adam optimisers stepped together.

        A group qualifies when the grad scaler is off (a scaler that scales unscales per optimiser), it has no
        ``max_norm`` (clipping runs per optimiser) and :func:`steps_together` allows its optimiser.
        """
        together, apart = self._split(grad_scaler, param_groups)
        super().optimizer_scaler_step_some(grad_scaler, apart)
        step_fused_adams(self.optimizers[name] for name in together)

    def optimizer_scaler_step_all(self, grad_scaler: NerfstudioGradScaler) -> None:
        """:meth:`optimizer_scaler_step_some` over every group."""
        self.optimizer_scaler_step_some(grad_scaler, list(self.optimizers))

    def _split(self, grad_scaler: GradScaler, param_groups: Sequence[str]) -> Tuple[List[str], List[str]]:
        """The groups stepped together and the ones left to nerfstudio, each in the given order."""
        together: List[str] = []
        apart: List[str] = []
        for name in param_groups:
            qualifies = (
                not grad_scaler.is_enabled()
                and self.config[name]["optimizer"].max_norm is None
                and steps_together(self.optimizers[name])
            )
            (together if qualifies else apart).append(name)
        return together, apart
