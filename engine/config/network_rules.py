"""Network options checked before anything loads: network_args keys and values, the LyCORIS
package, and option pairs that cannot go together. Returns (keys, message) errors that
`engine.config.rules` turns into RuleIssues."""
from __future__ import annotations

import importlib.util
from typing import Iterable

from engine.config.network_args import check_network_args
from engine.errors import ConfigError

LYCORIS_EXTRA = "lycoris"


def lycoris_installed() -> bool:
    """True when the LyCORIS package (`lycoris`, from lycoris-lora) can be imported."""
    return importlib.util.find_spec("lycoris") is not None


def network_errors(cfg) -> Iterable[tuple[tuple[str, ...], str]]:
    """The [network] section's errors as (option names, message): bad network_args, LyCORIS asked for but not
    installed, or nothing left to train."""
    n = cfg.network
    try:
        check_network_args(n.network_module, n.parsed_args, n.network_dim, n.network_alpha)
    except ConfigError as exc:
        yield ("network_args",), f"{exc.message}; {exc.hint}" if exc.hint else exc.message
    if n.network_module == "lycoris.kohya" and not lycoris_installed():
        yield ("network_module",), (f"network_module = \"lycoris.kohya\" needs the LyCORIS package: "
                                    f"pip install 'sdxl-tui[{LYCORIS_EXTRA}]' (or pip install lycoris-lora)")
    if n.network_train_unet_only and n.network_train_text_encoder_only:
        yield (("network_train_unet_only", "network_train_text_encoder_only"),
               "network_train_unet_only and network_train_text_encoder_only together leave nothing to train")
    if n.network_train_text_encoder_only and cfg.caching.cache_text_encoder_outputs:
        yield (("network_train_text_encoder_only", "cache_text_encoder_outputs"),
               "cache_text_encoder_outputs cannot be used when the text encoders are trained")
    if n.base_weights_multiplier and len(n.base_weights_multiplier) != len(n.base_weights):
        yield (("base_weights", "base_weights_multiplier"),
               f"base_weights_multiplier has {len(n.base_weights_multiplier)} values for "
               f"{len(n.base_weights)} base_weights files; give one per file (or none for 1.0 each)")
    if n.dim_from_weights and not n.network_weights:
        yield ("dim_from_weights", "network_weights"), "dim_from_weights needs network_weights (the file to read)"
    if n.network_module == "lycoris.kohya":
        if n.network_dropout is not None:
            # sd-scripts passes it as neuron_dropout, which lycoris.kohya never reads
            yield (("network_dropout", "network_module"),
                   "lycoris.kohya does not read network_dropout (with sd-scripts it is silently ignored); "
                   "use network_args dropout=<p> for LyCORIS' neuron dropout")
        for key, value in (("dim_from_weights", n.dim_from_weights),):
            if value:
                yield (key, "network_module"), f"{key} is implemented for networks.lora only, not lycoris.kohya"
