"""The 19 SDXL presets kohya_ss ships: each becomes the sd-scripts options kohya_ss' train_model
passes (checked against values read off kohya_ss' code by hand), every key gets a note, and the
run config either takes it or refuses it by name, never swapping in something else."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.learning_sections import NetworkSection
from engine.errors import ConfigError
from engine.interop.kohya_gui import gui_to_sd_args, read_gui_json
from engine.interop.kohya_gui_import import convert_kohya_gui


def _find_presets() -> Path:
    """shared/data/kohya_ss_presets beside the checkout (../shared), or beside a folder above it
    (a git worktree sits one level deeper)."""
    root = Path(__file__).resolve().parents[3]
    for base in root.parents:
        if (base / "shared" / "data" / "kohya_ss_presets").is_dir():
            return base / "shared" / "data" / "kohya_ss_presets"
    return root / ".." / "shared" / "data" / "kohya_ss_presets"


PRESETS = _find_presets()
pytestmark = pytest.mark.skipif(not PRESETS.is_dir(), reason=f"kohya_ss presets not found at {PRESETS} "
                                "(they live beside the checkout in shared/data, not in the repo)")

LYCO_LOKR_1IMG = ["preset=full", "conv_dim=100000", "conv_alpha=1", "use_tucker=False", "rank_dropout=0",
                  "bypass_mode=False", "dora_wd=False", "module_dropout=0", "factor=6", "use_cp=False",
                  "use_scalar=False", "decompose_both=False", "rank_dropout_scale=False", "algo=lokr",
                  "train_norm=False"]
# sd-scripts options per preset (a few each), as kohya_ss would pass them.
EXPECTED: dict[str, dict] = {
    "SDXL - 1 image LoRA v1.0.json": dict(
        network_module="lycoris.kohya", network_args=LYCO_LOKR_1IMG, optimizer_type="Prodigy", max_train_steps=160,
        lr_scheduler_type="CosineAnnealingLR", lr_scheduler_args=["T_max=1000", "eta_min=0e-0"],
        multires_noise_iterations=5, network_dim=100000),
    "SDXL - LoHA AI_Characters v1.0.json": dict(
        network_module="lycoris.kohya", optimizer_type="AdamW8bit", max_train_epochs=100, learning_rate=0.001,
        text_encoder_lr=[0.001, 0.001]),
    "SDXL - LoKR v1.0.json": dict(
        network_module="lycoris.kohya", optimizer_type="Prodigy", multires_noise_iterations=8,
        multires_noise_discount=0.2, network_dim=64, train_batch_size=8),
    "SDXL - LoRA AI_Now ADamW v1.0.json": dict(
        network_module="networks.lora", optimizer_type="AdamW", max_train_steps=320, noise_offset=0.0375,
        adaptive_noise_scale=0.00375, min_timestep=100, max_timestep=900),
    "SDXL - LoRA AI_Now prodigy v1.0.json": dict(
        network_module="networks.lora", optimizer_type="Prodigy", network_alpha=16,
        optimizer_args=["weight_decay=0.01", "decouple=True", "d0=0.0001", "use_bias_correction=True"]),
    "SDXL - LoRA AI_characters standard v1.0.json": dict(
        network_module="networks.lora", optimizer_type="AdamW8bit", max_train_epochs=100, unet_lr=2e-05,
        text_encoder_lr=[2e-05, 2e-05], resolution="1024,1024", no_half_vae=True),
    "SDXL - LoRA AI_characters standard v1.1.json": dict(
        network_module="networks.lora", optimizer_type="AdamW", max_train_epochs=50, train_batch_size=3),
    "SDXL - LoRA adafactor v1.0.json": dict(
        network_module="networks.lora", optimizer_type="Adafactor", lr_scheduler="adafactor", log_prefix="xl-loha",
        max_train_epochs=30),
    "SDXL - LoRA aitrepreneur clothing v1.0.json": dict(
        network_module="networks.lora", optimizer_type="Adafactor", network_alpha=1, max_train_epochs=15,
        optimizer_args=["scale_parameter=False", "relative_step=False", "warmup_init=False"]),
    "SDXL - LoRA by malcolmrey training v1.0.json": dict(
        network_module="networks.lora", optimizer_type="AdamW8bit", network_alpha=13, max_train_epochs=16,
        scale_weight_norms=2.5),
    "SDXL - LoRA face dogu_cat v1.0.json": dict(
        network_module="networks.lora", network_dim=92, network_alpha=46, lr_scheduler="cosine", max_train_epochs=10),
    "SDXL - LoRA finetuning phase 1_v1.1.json": dict(
        network_module="networks.lora", optimizer_type="AdamW", network_dim=128, max_train_steps=1600),
    "SDXL - LoRA finetuning phase 2_v1.1.json": dict(
        network_module="networks.lora", max_train_epochs=1, log_prefix="xl-loha", train_batch_size=1),
    "SDXL - LoRA kudou-reira dadaptadam v1.0.json": dict(
        network_module="networks.lora", optimizer_type="DAdaptAdam", network_train_unet_only=True,
        lr_warmup_steps=0.05, network_dim=256),
    "SDXL - LoRA kudou-reira dadaptadam v1.1.json": dict(
        network_module="networks.lora", optimizer_type="DAdaptAdam", network_train_unet_only=True,
        optimizer_args=["decouple=True", "weight_decay=0.1", "betas=0.9,0.91"]),
    "SDXL - LoRA kudou-reira prodigy v4.0.json": dict(
        network_module="networks.lora", lr_scheduler="cosine_with_restarts", lr_scheduler_type="CosineAnnealingLR",
        lr_scheduler_args=["T_max=30"], network_train_unet_only=True),
    "SDXL - edgLoRAXL AI_Now.json": dict(
        network_module="networks.lora", optimizer_type="Prodigy", max_grad_norm=1, max_train_steps=320),
    "SDXL - edgLoRAXL.json": dict(
        network_module="networks.lora", optimizer_type="Prodigy", max_grad_norm=0, max_train_steps=1600),
    "locon-dadaptation-sdxl.json": dict(
        network_module="networks.lora", optimizer_type="Adafactor", network_train_unet_only=True,
        lr_warmup_steps=0.08, resolution="512,512", learning_rate=4e-07),
}


def _presets() -> list[str]:
    return sorted(p.name for p in PRESETS.glob("*.json")) if PRESETS.is_dir() else sorted(EXPECTED)


def test_all_19_presets_are_covered():
    assert _presets() == sorted(EXPECTED) and len(EXPECTED) == 19


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_gives_kohya_ss_options_and_a_note_per_key(name):
    gui = read_gui_json(PRESETS / name)
    ga = gui_to_sd_args(gui)
    for option, value in EXPECTED[name].items():
        assert ga.args.get(option) == value, option
    noted = {n.key for n in ga.notes}
    assert set(gui) <= noted, f"keys without a note: {sorted(set(gui) - noted)}"


def _accepted_modules() -> tuple:
    return NetworkSection.model_fields["network_module"].annotation.__args__


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_converts_or_is_refused_by_name(name, tmp_path):
    gui = read_gui_json(PRESETS / name)
    try:
        result, ga = convert_kohya_gui(gui, dataset_config=str(tmp_path / "ds.toml"))
    except ConfigError as exc:
        # the message names a key the preset sets, and the GUI key behind it
        text = str(exc)
        assert "GUI key" in text and any(k in text for k in ga_keys(gui)), text
        if EXPECTED[name]["network_module"] not in _accepted_modules():
            assert "LoRA_type" in text  # refused by name, never trained as plain LoRA
        return
    cfg = result.config
    assert cfg.network.network_module == EXPECTED[name]["network_module"]
    assert cfg.optimizer.optimizer_type == ga.args["optimizer_type"]
    assert cfg.network.network_dim == ga.args["network_dim"]
    assert cfg.network.network_train_unet_only == ga.args.get("network_train_unet_only", False)
    if "optimizer_type" in EXPECTED[name]:
        assert cfg.optimizer.optimizer_type.lower() == EXPECTED[name]["optimizer_type"].lower()


def ga_keys(gui) -> list[str]:
    return [k for k, v in gui.items() if v not in ("", False, None, 0)] + ["additional_parameters"]


def test_lokr_preset_is_lycoris_lokr_with_its_factor(tmp_path):
    gui = read_gui_json(PRESETS / "SDXL - LoKR v1.0.json")
    args = gui_to_sd_args(gui).args
    assert args["network_module"] == "lycoris.kohya"
    assert "algo=lokr" in args["network_args"] and "factor=-1" in args["network_args"]
    assert "use_cp=True" in args["network_args"] and "conv_dim=64" in args["network_args"]
    if "lycoris.kohya" not in _accepted_modules():
        with pytest.raises(ConfigError, match="LoRA_type"):
            convert_kohya_gui(gui, dataset_config=str(tmp_path / "ds.toml"))


def test_a_preset_that_converts_has_the_values_kohya_ss_passes(tmp_path):
    result, _ = convert_kohya_gui(read_gui_json(PRESETS / "SDXL - LoRA AI_characters standard v1.0.json"),
                                  dataset_config=str(tmp_path / "ds.toml"))
    cfg = result.config
    assert (cfg.network.network_dim, cfg.network.network_alpha) == (32, 32.0)
    assert cfg.optimizer.optimizer_type == "AdamW8bit" and cfg.optimizer.unet_lr == 2e-05
    assert cfg.optimizer.text_encoder_lr1 == cfg.optimizer.text_encoder_lr2 == 2e-05
    assert cfg.training.max_train_epochs == 100 and cfg.training.train_batch_size == 8
    assert cfg.precision.no_half_vae and cfg.precision.mixed_precision == "fp16"
    assert cfg.training.min_snr_gamma == 5.0
    assert result.dataset_defaults["resolution"] == [1024, 1024]
    assert result.dataset_defaults["caption_dropout_rate"] == 0.05


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_converted_preset_passes_plan_once_model_and_folder_are_given(name, tmp_path, tiny_model, demo_dataset):
    import shutil

    from engine.interop.kohya_gui_import import import_kohya_gui
    from engine.plan.run_plan import make_plan

    shutil.copytree(demo_dataset.image_dir, tmp_path / "img" / "4_shape")
    paths = {"pretrained_model_name_or_path": str(tiny_model.diffusers_dir), "train_data_dir": str(tmp_path / "img"),
             "output_dir": str(tmp_path / "out")}
    try:
        result = import_kohya_gui(PRESETS / name, side_path=tmp_path / "run.toml", paths=paths)
        plan = make_plan(result.config, base_dir=tmp_path)
    except ConfigError as exc:
        # refused by name: the GUI key, or (from the dataset checks) the sd-scripts key the preset sets
        gui = read_gui_json(PRESETS / name)
        assert "GUI key" in str(exc) or any(f"{k} = {gui[k]}" in str(exc) for k in ga_keys(gui)[:-1]), str(exc)
        return
    assert not plan.problems, plan.problems
    assert [(s.images, s.num_repeats) for s in plan.subsets] == [(demo_dataset.num_images, 4)]
