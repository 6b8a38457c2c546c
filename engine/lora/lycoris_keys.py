"""LyCORIS tensor names in a kohya-prefixed file (`lora_unet_….hada_w1_a`), for `inspect`:
which algorithm each module uses and its rank. Names from the `lycoris-lora` package
(`lycoris/modules/*.py` state-dict keys); no torch needed."""
from __future__ import annotations

from typing import Mapping, Optional

# A tensor name that only one algorithm writes -> that algorithm.
ALGO_BY_KEY = {
    "hada_w1_a": "loha", "hada_w1_b": "loha", "hada_t1": "loha",
    "lokr_w1": "lokr", "lokr_w1_a": "lokr", "lokr_w2": "lokr", "lokr_w2_a": "lokr", "lokr_t2": "lokr",
    "on_input": "ia3", "diff": "full", "diff_b": "full", "w_norm": "norm", "b_norm": "norm",
    "oft_blocks": "diag-oft", "oft_diag": "diag-oft",
}
LORA_KEYS = ("lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha", "dora_scale", "scalar")


def is_lycoris(keys, metadata: Mapping[str, str]) -> bool:
    """True when a LoRA file is LyCORIS (its ss_network_module says so, or a key names a LyCORIS weight such as
    hada_w1_a or lokr_w1)."""
    if metadata.get("ss_network_module", "").startswith("lycoris"):
        return True
    return any(key.partition(".")[2] in ALGO_BY_KEY for key in keys)


def module_algos(tensors: Mapping) -> dict[str, tuple[str, Optional[int], Optional[float]]]:
    """module name -> (algorithm, rank or None, alpha or None)."""
    out: dict[str, tuple[str, Optional[int], Optional[float]]] = {}
    by_module: dict[str, dict] = {}
    for key, value in tensors.items():
        name, _, tensor = key.partition(".")
        by_module.setdefault(name, {})[tensor] = value
    for name, parts in by_module.items():
        algo = next((ALGO_BY_KEY[t] for t in parts if t in ALGO_BY_KEY), None)
        if algo is None:
            algo = "locon/dora" if "dora_scale" in parts else "lora/locon"
        rank = None
        for tensor in ("lora_down.weight", "hada_w1_b", "lokr_w1_b", "lokr_w2_b"):
            if tensor in parts:
                rank = int(parts[tensor].shape[0])
                break
        alpha = parts.get("alpha")
        out[name] = (algo, rank, float(alpha) if alpha is not None else None)
    return out
