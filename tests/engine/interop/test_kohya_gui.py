"""kohya_ss GUI JSON mapping rules (read off kohya_ss' lora_gui.py / common_gui.py), the
additional_parameters parser, the files the import writes, and import -> export -> import."""
from __future__ import annotations

import json
import shutil

import pytest

from engine.data.dataset_config import load_dataset_config
from engine.errors import ConfigError
from engine.interop.kohya_cli_args import parse_additional_parameters
from engine.interop.kohya_gui import gui_to_sd_args, is_kohya_gui_json, read_gui_json
from engine.interop.kohya_gui_export import export_kohya_gui
from engine.interop.kohya_gui_import import convert_kohya_gui, import_kohya_gui
from engine.interop.kohya_gui_network import network_from_gui

BASE = {"LoRA_type": "Standard", "sdxl": True, "optimizer": "AdamW", "learning_rate": 1e-4, "unet_lr": 1e-4,
        "text_encoder_lr": 5e-5, "max_resolution": "64,64", "epoch": 2, "max_train_steps": 0,
        "train_batch_size": 1, "network_dim": 4, "network_alpha": 2, "mixed_precision": "no",
        "noise_offset_type": "Original", "additional_parameters": ""}


def _notes(result) -> dict:
    return {n.key: n for n in result.notes}


def test_additional_parameters_as_argparse_reads_them():
    got = parse_additional_parameters('--lr_scheduler_type "CosineAnnealingLR" --lr_scheduler_args "T_max=30" '
                                      '"eta_min=0e-0" --network_train_unet_only --max_grad_norm=0 '
                                      '--log_prefix=12 --text_encoder_lr 1e-5 2e-5 --noise_offset -0.05')
    assert got == {"lr_scheduler_type": "CosineAnnealingLR", "lr_scheduler_args": ["T_max=30", "eta_min=0e-0"],
                   "network_train_unet_only": True, "max_grad_norm": 0, "log_prefix": "12",
                   "text_encoder_lr": [1e-5, 2e-5], "noise_offset": -0.05}
    with pytest.raises(ConfigError, match="'stray' is not an option"):
        parse_additional_parameters("stray --seed 1")
    with pytest.raises(ConfigError, match="--seed takes one value"):
        parse_additional_parameters("--seed 1 2")


def test_lora_types_give_kohya_ss_network_args():
    locon = network_from_gui({"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 4, "rank_dropout": 0})
    assert (locon.network_module, locon.network_args) == ("networks.lora", ["conv_dim=8", "conv_alpha=4"])
    dylora = network_from_gui({"LoRA_type": "Kohya DyLoRA", "conv_dim": 4, "unit": 2, "module_dropout": 0.1})
    assert dylora.network_module == "networks.dylora"
    assert dylora.network_args == ["conv_dim=4", "conv_alpha=1", "module_dropout=0.1", "unit=2"]
    loha = network_from_gui({"LoRA_type": "LyCORIS/LoHa", "conv_dim": 4, "conv_alpha": 2})
    assert loha.network_module == "lycoris.kohya" and "algo=loha" in loha.network_args
    assert "preset=full" in loha.network_args  # a file without LyCORIS_preset gets the GUI's "full"
    oft = network_from_gui({"LoRA_type": "LyCORIS/Diag-OFT", "constrain": 0.5, "rescaled": True})
    assert "constraint=0.5" in oft.network_args and "rescaled=True" in oft.network_args
    native = network_from_gui({"LoRA_type": "Kohya LoKr", "factor": 8, "conv_dim": 0})
    assert (native.network_module, native.network_args) == ("networks.lokr", ["factor=8"])
    with pytest.raises(ConfigError, match="another model family"):
        network_from_gui({"LoRA_type": "Flux1"})


def test_keys_a_file_lacks_take_the_fresh_gui_values():
    ga = gui_to_sd_args({k: v for k, v in BASE.items() if k not in ("max_train_steps", "optimizer")})
    assert ga.args["max_train_steps"] == 1600 and ga.args["optimizer_type"] == "AdamW8bit"
    assert ga.args["max_bucket_reso"] == 2048 and ga.args["min_bucket_reso"] == 256  # sd-scripts' own: 1024 / 256
    assert any(n.key == "max_bucket_reso" and "not in the file" in n.detail for n in ga.notes)


def test_a_zero_the_gui_drops_takes_sd_scripts_default(tmp_path):
    cfg, _ = convert_kohya_gui({**BASE, "max_grad_norm": 0}, dataset_config=str(tmp_path / "d.toml"))
    assert cfg.config.optimizer.max_grad_norm == 1.0  # kohya_ss filters 0 out: the edgLoRAXL preset's workaround
    assert _notes(cfg)["max_grad_norm"].status == "not used"


def test_rates_warmup_noise_and_sdxl_keys():
    gui = {**BASE, "lr_warmup": 10, "text_encoder_lr": 0, "noise_offset_type": "Multires", "noise_offset": 0.1,
           "multires_noise_iterations": 6, "multires_noise_discount": 0.3, "sdxl_no_half_vae": True,
           "sdxl_cache_text_encoder_outputs": True, "optimizer_args": '"weight_decay=0.1" betas=0.9,0.99',
           "xformers": "sdpa", "lr_scheduler_num_cycles": ""}
    ga = gui_to_sd_args(gui)
    a = ga.args
    assert a["lr_warmup_steps"] == 0.1  # 10 % -> a fraction of the total steps
    assert a["network_train_unet_only"] is True and "text_encoder_lr" not in a  # TE rate 0 -> UNet only
    assert "noise_offset" not in a and a["multires_noise_iterations"] == 6 and a["multires_noise_discount"] == 0.3
    assert a["no_half_vae"] and a["cache_text_encoder_outputs"] and a["sdpa"] and "xformers" not in a
    assert a["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert a["lr_scheduler_num_cycles"] == 2  # empty -> epoch, as kohya_ss passes it
    assert a["max_train_epochs"] == 2  # no folder to count yet: epoch stands for the length
    with pytest.raises(ConfigError, match="sdxl = false"):
        gui_to_sd_args({**BASE, "sdxl": False})
    with pytest.raises(ConfigError, match="my_key"):
        gui_to_sd_args({**BASE, "my_key": 3})
    with pytest.raises(ConfigError, match="conv_dims.*conv_block_dims"):
        gui_to_sd_args({**BASE, "conv_dims": "4,4,4"})


def test_epoch_counts_the_folder_as_kohya_ss_does(tmp_path, demo_dataset):
    shutil.copytree(demo_dataset.image_dir, tmp_path / "train" / "3_shape")
    shutil.copytree(demo_dataset.image_dir, tmp_path / "reg" / "1_shape")
    gui = {**BASE, "train_data_dir": str(tmp_path / "train"), "reg_data_dir": str(tmp_path / "reg"),
           "train_batch_size": 4, "epoch": 5}
    ga = gui_to_sd_args(gui)
    n = demo_dataset.num_images
    assert ga.args["max_train_steps"] == -(-(n * 3) * 5 * 2 // 4)  # ceil(images×repeats / batch × epoch × 2 for reg)
    assert "max_train_epochs" not in ga.args


def test_a_dropped_option_is_refused_with_its_gui_key(tmp_path):
    with pytest.raises(ConfigError, match="GUI key additional_parameters") as info:
        convert_kohya_gui({**BASE, "additional_parameters": "--some_option_nobody_has 3"},
                          dataset_config=str(tmp_path / "d.toml"))
    assert "some_option_nobody_has" in str(info.value)
    with pytest.raises(ConfigError, match="nonsense_key"):  # argparse: --network_args replaces LoRA_type's list
        convert_kohya_gui({**BASE, "additional_parameters": "--network_args nonsense_key=1"},
                          dataset_config=str(tmp_path / "d.toml"))


def test_import_writes_the_folder_dataset_prompts_and_accelerate_config(tmp_path, demo_dataset):
    shutil.copytree(demo_dataset.image_dir, tmp_path / "train" / "2_ohwx shape")
    gui = {**BASE, "train_data_dir": "train", "sample_prompts": "a red circle --w 64 --h 64",
           "num_processes": 2, "gpu_ids": "0,1", "caption_extension": ".txt", "output_dir": "out"}
    (tmp_path / "cfg.json").write_text(json.dumps(gui))
    assert is_kohya_gui_json(read_gui_json(tmp_path / "cfg.json"))
    result = import_kohya_gui(tmp_path / "cfg.json", side_path=tmp_path / "run.toml")
    cfg = result.config
    spec = load_dataset_config(cfg.dataset.dataset_config)
    (subset,) = spec.all_subsets()
    assert (subset.num_repeats, subset.class_tokens, subset.caption_extension) == (2, "ohwx shape", ".txt")
    assert spec.datasets[0].resolution == (64, 64)
    assert (tmp_path / "run.sample_prompts.txt").read_text() == gui["sample_prompts"]
    yaml = (tmp_path / "run.accelerate.yaml").read_text()
    assert "num_processes: 2" in yaml and "gpu_ids: '0,1'" in yaml and "MULTI_GPU" in yaml
    assert any("accelerate launch" in m for m in result.messages)
    assert cfg.training.max_train_steps == -(-(demo_dataset.num_images * 2) * 2 // 1)


def test_import_export_import_gives_the_same_run_config(tmp_path, demo_dataset):
    shutil.copytree(demo_dataset.image_dir, tmp_path / "train" / "2_shape")
    gui = {**BASE, "train_data_dir": str(tmp_path / "train"), "LoRA_type": "Kohya LoCon", "conv_dim": 4,
           "conv_alpha": 2, "lr_warmup": 5, "max_grad_norm": 0.5, "caption_extension": ".txt",
           "enable_bucket": True, "min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_reso_steps": 32,
           "additional_parameters": "--log_prefix=mine --network_train_unet_only --max_grad_norm=0",
           "output_dir": str(tmp_path / "o"),
           "sample_prompts": "a shape --w 64 --h 64", "seed": 7}
    (tmp_path / "first.json").write_text(json.dumps(gui))
    first = import_kohya_gui(tmp_path / "first.json", side_path=tmp_path / "first.toml").config
    exported = export_kohya_gui(first, tmp_path / "exp")
    second = import_kohya_gui(exported.json_path, side_path=tmp_path / "second.toml").config
    strip = lambda c: c.with_values(dataset_config="", sample_prompts="").model_dump()  # noqa: E731
    assert strip(second) == strip(first)
    assert first.network.network_args == ["conv_dim=4", "conv_alpha=2"]
    assert first.optimizer.max_grad_norm == 0  # additional_parameters win over the GUI's 0.5
    assert first.optimizer.lr_warmup_steps == 0.05
    assert first.logging.log_prefix == "mine" and first.network.network_train_unet_only
    a, b = load_dataset_config(first.dataset.dataset_config), load_dataset_config(second.dataset.dataset_config)
    assert [(s.image_dir, s.num_repeats, s.class_tokens) for s in a.all_subsets()] == \
        [(s.image_dir, s.num_repeats, s.class_tokens) for s in b.all_subsets()]
    assert (a.datasets[0].resolution, a.datasets[0].max_bucket_reso) == (b.datasets[0].resolution,
                                                                          b.datasets[0].max_bucket_reso)
    assert open(first.sampling.sample_prompts).read() == open(second.sampling.sample_prompts).read()


def test_a_current_gui_save_with_other_families_keys_converts(tmp_path):
    """The GUI saves every widget: Flux/SD3/... keys and the huber defaults are no-ops for SDXL with l2."""
    gui = {**BASE, "flux1_checkbox": False, "sd3_checkbox": False, "guidance_scale": 3.5, "t5xxl_max_token_length": 512,
           "timestep_sampling": "sigma", "sd3_t5xxl": "t5.safetensors", "anima_compile_mode": "default",
           "loss_type": "l2", "huber_c": 0.1, "huber_scale": 1, "huber_schedule": "snr", "main_process_port": 0,
           "dynamo_backend": "no", "extra_accelerate_launch_args": "", "loraplus_lr_ratio": 0}
    result, ga = convert_kohya_gui(gui, dataset_config=str(tmp_path / "d.toml"))
    notes = _notes(result)
    assert notes["guidance_scale"].status == "not used" and "Flux.1" in notes["guidance_scale"].detail
    assert notes["huber_c"].status == "not used" and "huber_c" not in ga.args
    assert "torch_compile" not in ga.args and not result.config.precision.torch_compile
    gui["loss_type"] = "huber"  # now the huber keys are passed on, as kohya_ss does
    assert gui_to_sd_args(gui).args["huber_c"] == 0.1
