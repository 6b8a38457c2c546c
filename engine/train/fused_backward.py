"""Fused backward pass for LoRA: each parameter is stepped inside its own gradient hook.

`register_post_accumulate_grad_hook` fires as soon as a parameter's gradient is complete;
the hook runs the optimizer update for that one parameter and frees the gradient at once,
so the gradients of all LoRA parameters never exist at the same time (the memory a normal
step needs for them is saved).

How: one small optimizer of the configured class per parameter, with that parameter's group
hyper-parameters. The configured optimizer (the "parent") is never stepped; it holds the
param groups the lr scheduler edits, and each hook copies its group's current lr before the
update. For element-wise optimizers (AdamW, Lion, SGD, the 8-bit ones, Adafactor) this is the
same update as one optimizer over all parameters. Limits: gradient accumulation must be 1;
clipping to the global norm of all gradients is impossible (they never exist together), so
`max_grad_norm` clips each parameter's gradient on its own (engine.config.rules warns); the fp16 grad
scaler is not supported (use bf16).
"""
from __future__ import annotations


class FusedBackward:
    """Per-parameter optimizers stepped in gradient hooks (the module docstring says how and the limits).

    The parent optimizer is never stepped; it keeps the param groups the lr scheduler edits.
    `max_grad_norm` > 0 clips each parameter's gradient on its own.
    """
    def __init__(self, parent_optimizer, max_grad_norm: float = 0.0) -> None:
        self.parent = parent_optimizer
        self.max_grad_norm = max_grad_norm
        self.children: list = []
        self._handles: list = []
        # The parent is never stepped by design; tell torch's lr scheduler so it does not warn
        # that the schedule runs ahead of the optimizer.
        parent_optimizer._opt_called = True
        optimizer_class = type(parent_optimizer)
        for group in parent_optimizer.param_groups:
            settings = {key: value for key, value in group.items() if key not in ("params", "initial_lr")}
            for param in group["params"]:
                if not param.requires_grad:
                    continue
                child = optimizer_class([{**settings, "params": [param]}], **_constructor_defaults(parent_optimizer))
                self.children.append(child)
                self._handles.append(param.register_post_accumulate_grad_hook(self._hook(child, group)))

    def _hook(self, child, parent_group):
        def step_now(param) -> None:
            if self.max_grad_norm > 0:
                import torch

                torch.nn.utils.clip_grad_norm_([param], self.max_grad_norm)
            child.param_groups[0]["lr"] = parent_group["lr"]
            child.step()
            param.grad = None

        return step_now

    def remove(self) -> None:
        """Unhook every parameter (after training): gradients then accumulate normally again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # The run saves and restores optimizer state through these, as for a plain optimizer.
    def state_dict(self) -> dict:
        """{"children": each child optimizer's state_dict, "state": their per-parameter state (the same
        tensors, not copies) in a plain optimizer's layout}.
        """
        children = [child.state_dict() for child in self.children]
        # "state" mirrors a plain optimizer's layout (the same tensors, not copies) so tools that
        # size optimizer state (engine.storage.disk) count the fused one too.
        return {"children": children, "state": {i: c["state"].get(0, {}) for i, c in enumerate(children)}}

    def load_state_dict(self, state: dict) -> None:
        """Load each child optimizer's state from a `state_dict`; raises ValueError when the saved run had a
        different number of trained parameters.
        """
        for child, child_state in zip(self.children, state["children"], strict=True):
            child.load_state_dict(child_state)


def _constructor_defaults(optimizer) -> dict:
    """Keyword arguments some optimizers need at construction even when groups carry them."""
    defaults = getattr(optimizer, "defaults", {})
    # transformers' Adafactor refuses lr with relative_step and needs lr=None explicitly then.
    if type(optimizer).__name__ == "Adafactor":
        keys = ("lr", "relative_step", "scale_parameter", "warmup_init")
        return {key: defaults[key] for key in keys if key in defaults}
    return {}
