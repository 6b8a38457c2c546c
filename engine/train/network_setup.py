"""Build the trained network for a run: base_weights merged first, then networks.lora (with its
network_args, dim_from_weights, network_weights) or LyCORIS, applied to the model in fp32, and
the optimizer groups it gives (block lr weights, LoRA+)."""
from __future__ import annotations


def build_network(session):
    """LoRA / LyCORIS adapters (fp32) injected into `session.model`; `network_weights` loaded."""

    cfg, model = session.cfg, session.model
    net_cfg = cfg.network
    if net_cfg.base_weights:
        from engine.lora.merge import merge_base_weights

        merge_base_weights(model, net_cfg.base_weights, net_cfg.base_weights_multiplier)
    weights = None
    if net_cfg.network_weights:
        from engine.lora.file import load_lora

        weights, _ = load_lora(net_cfg.network_weights)
    if net_cfg.network_module == "lycoris.kohya":
        from engine.lora.lycoris_adapter import create_lycoris_network

        network = create_lycoris_network(model, net_cfg)
    else:
        from engine.lora.network import create_network, dims_from_state_dict

        module_dims = dims_from_state_dict(weights) if (weights is not None and net_cfg.dim_from_weights) else None
        network = create_network(model.unet, model.text_encoder1, model.text_encoder2, dim=net_cfg.network_dim,
                                 alpha=net_cfg.network_alpha, dropout=net_cfg.network_dropout,
                                 train_unet_only=net_cfg.network_train_unet_only,
                                 train_text_encoder_only=net_cfg.network_train_text_encoder_only,
                                 args=net_cfg.lora_args, module_dims=module_dims)
    from engine.train.precision import fp8_parts, lora_dtype, store_weights_fp8

    network.to(session.accelerator.device, lora_dtype(cfg))  # fp32 unless full_fp16 / full_bf16
    network.apply()
    for part in fp8_parts(cfg):  # fp8_base / fp8_base_unet: frozen weights stored in 8 bits
        store_weights_fp8(getattr(model, part), session.weight_dtype)
    if weights is not None:
        network.load_kohya_state_dict(weights)
    network.train()
    if cfg.precision.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    model.unet.train()  # diffusers checkpoints activations only in training mode
    if not net_cfg.network_train_unet_only:
        for encoder in (model.text_encoder1, model.text_encoder2):
            encoder.train()
            if cfg.precision.gradient_checkpointing:
                encoder.gradient_checkpointing_enable()
    return network


def param_groups(network, cfg) -> list[dict]:
    """Optimizer groups with the config's rates, block lr weights and LoRA+ ratios."""
    opt, net_cfg = cfg.optimizer, cfg.network
    lrs = (opt.resolved_unet_lr, opt.resolved_text_encoder_lr1, opt.resolved_text_encoder_lr2)
    if net_cfg.network_module == "lycoris.kohya":
        args = net_cfg.parsed_args

        def ratio(key: str) -> float:
            return float(args.get(key) or 0)

        general = ratio("loraplus_lr_ratio")  # LyCORIS, as sd-scripts: the specific ratio or the general one
        return network.param_groups(*lrs, loraplus_unet_ratio=ratio("loraplus_unet_lr_ratio") or general or None,
                                    loraplus_text_encoder_ratio=(ratio("loraplus_text_encoder_lr_ratio")
                                                                 or general or None))
    args = net_cfg.lora_args
    return network.param_groups(*lrs, block_lr_weight=args.block_lr_weight,
                                loraplus_unet_ratio=args.loraplus_unet_ratio,
                                loraplus_text_encoder_ratio=args.loraplus_text_encoder_ratio)
