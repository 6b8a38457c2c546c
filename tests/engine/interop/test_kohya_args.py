"""sd-scripts args TOML in and out: flattening, per-key notes, text_encoder_lr, warm-up ratio,
sd-scripts' defaults and precedence, dataset defaults merged into [general], train_data_dir
help, load_any_config, export files, and import -> export -> import identity."""
from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from engine.config.schema import RunConfig, option_index
from engine.config.toml_file import load_config, save_config
from engine.data.dataset_config import load_dataset_config
from engine.errors import ConfigError
from engine.interop.kohya_export import command_line as kohya_command_line
from engine.interop.kohya_export import export_kohya
from engine.interop.kohya_import import convert_kohya_args, import_kohya, is_kohya_args, load_any_config
from engine.interop.kohya_toml import flatten_args, read_toml
from sdxl_tui.cli import main

# Written the way sd-scripts' documentation shows an args file (tables are decoration).
ARGS_TOML = """\
[model_arguments]
pretrained_model_name_or_path = "stabilityai/stable-diffusion-xl-base-1.0"

[additional_network_arguments]
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
network_args = [ "conv_dim=8",]
network_train_unet_only = false
no_metadata = false

[optimizer_arguments]
optimizer_type = "adafactor"
learning_rate = 1e-4
unet_lr = 1e-4
text_encoder_lr = 2e-5
optimizer_args = [ "scale_parameter=False", "relative_step=False", "warmup_init=False",]
lr_scheduler = "cosine"
lr_warmup_steps = 0.05
max_grad_norm = 0

[dataset_arguments]
dataset_config = "{dataset}"
cache_latents = true

[training_arguments]
output_dir = "{out}"
output_name = "my_sdxl_lora"
save_precision = "float"
save_every_n_epochs = 1
train_batch_size = 2
max_train_epochs = 10
mixed_precision = "bf16"
gradient_checkpointing = true
xformers = true
seed = 1234
min_snr_gamma = 5
noise_ofset = 0.05

[sample_prompt_arguments]
sample_every_n_epochs = 1
sample_sampler = "k_euler_a"

[saving_arguments]
save_model_as = "safetensors"

[logging_arguments]
log_with = "tensorboard"
logging_dir = "{out}/logs"
"""

DATASET_TOML = """\
[general]
enable_bucket = true
caption_extension = ".caption"

[[datasets]]
resolution = 1024
batch_size = 2

  [[datasets.subsets]]
  image_dir = "images/cat"
  num_repeats = 10
  class_tokens = "cat"
"""


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    dataset = tmp_path / "dataset.toml"
    dataset.write_text(DATASET_TOML)
    args = tmp_path / "config.toml"
    args.write_text(ARGS_TOML.format(dataset=dataset.as_posix(), out=(tmp_path / "out").as_posix()))
    return args, dataset


def _notes(result):
    return {n.key: n for n in result.notes}


def test_flattening_detection_and_every_key_noted(files):
    args, _ = files
    doc = read_toml(args)
    assert is_kohya_args(doc)
    assert flatten_args({"a": {"x": 1}, "y": 2, "b": {"x": 3}}) == {"x": 3, "y": 2}
    result = convert_kohya_args(doc)
    cfg = result.config
    notes = _notes(result)
    assert set(flatten_args(doc)) <= set(notes)  # every key in the file is accounted for
    assert cfg.network.network_dim == 32 and cfg.network.network_alpha == 16.0
    assert cfg.network.network_args == ["conv_dim=8", "conv_alpha=1"] and notes["network_args"].status == "converted"
    assert cfg.optimizer.optimizer_type == "Adafactor" and notes["optimizer_type"].status == "converted"
    assert cfg.optimizer.text_encoder_lr1 == cfg.optimizer.text_encoder_lr2 == 2e-5
    assert notes["text_encoder_lr"].status == "renamed"
    assert cfg.optimizer.lr_warmup_steps == 0.05 and "ratio" in notes["lr_warmup_steps"].detail
    assert cfg.optimizer.max_grad_norm == 0
    assert cfg.saving.save_precision == "fp32" and cfg.sampling.sample_sampler == "euler_a"
    assert cfg.training.max_train_epochs == 10 and cfg.training.max_train_steps is None
    assert cfg.training.seed == 1234 and cfg.training.min_snr_gamma == 5.0
    assert notes["xformers"].status == "not used" and notes["no_metadata"].status == "mapped"
    assert notes["noise_ofset"].status == "not used" and "did you mean 'noise_offset'" in notes["noise_ofset"].detail
    assert cfg.logging.log_with == "tensorboard"
    ours = Path(save_config(RunConfig(), args.parent / "ours.toml"))
    assert not is_kohya_args(tomlkit.parse(ours.read_text()).unwrap())


def test_two_text_encoder_rates_and_sd_scripts_defaults():
    result = convert_kohya_args({"text_encoder_lr": [3e-5, 1e-5], "dataset_config": "x.toml",
                                 "max_train_steps": 500, "max_train_epochs": 4})
    cfg = result.config
    assert (cfg.optimizer.text_encoder_lr1, cfg.optimizer.text_encoder_lr2) == (3e-5, 1e-5)
    assert "only the first" in _notes(result)["text_encoder_lr"].detail
    # Left out of the file -> sd-scripts' defaults, not ours.
    assert cfg.network.network_dim == 4 and cfg.network.network_alpha == 1.0
    assert cfg.precision.gradient_checkpointing is False and cfg.caching.cache_latents is False
    assert cfg.precision.mixed_precision == "no" and cfg.optimizer.optimizer_type == "AdamW"
    assert cfg.optimizer.learning_rate == 2e-6 and cfg.saving.output_name == "last"
    # sd-scripts: epochs win over steps.
    assert cfg.training.max_train_epochs == 4 and cfg.training.max_train_steps is None
    assert convert_kohya_args({"dataset_config": "x.toml"}).config.training.max_train_steps == 1600


def test_dataset_defaults_go_under_general(tmp_path, files):
    args, dataset = files
    with args.open("a") as handle:
        handle.write('\n[extra]\nresolution = "896,1152"\ncaption_extension = ".txt"\nflip_aug = true\n')
    result = import_kohya(args, merged_dataset_path=tmp_path / "run.dataset.toml")
    assert result.dataset_defaults == {"resolution": [896, 1152], "caption_extension": ".txt", "flip_aug": True}
    merged = Path(result.config.dataset.dataset_config)
    assert merged == (tmp_path / "run.dataset.toml").resolve()
    raw = read_toml(merged)
    assert raw["general"]["caption_extension"] == ".caption"  # [general] beats the command line
    assert raw["general"]["flip_aug"] is True and raw["general"]["resolution"] == [896, 1152]
    spec = load_dataset_config(merged)
    subset = spec.all_subsets()[0]
    assert subset.image_dir == (tmp_path / "images" / "cat").resolve()
    assert subset.flip_aug is True and subset.caption_extension == ".caption"
    assert spec.datasets[0].resolution == (1024, 1024)  # the dataset's own value still wins


def test_train_data_dir_without_dataset_builds_the_folder_dataset(tmp_path):
    (tmp_path / "train" / "10_mycat").mkdir(parents=True)
    (tmp_path / "reg" / "2_cat").mkdir(parents=True)
    args = tmp_path / "kohya.toml"
    args.write_text('pretrained_model_name_or_path = "m.safetensors"\n'
                    f'train_data_dir = "{(tmp_path / "train").as_posix()}"\n'
                    'reg_data_dir = "reg"\nresolution = "768,1024"\ncaption_extension = ".caption"\n'
                    f'output_dir = "{(tmp_path / "out").as_posix()}"\n')
    result = convert_kohya_args(read_toml(args), base_dir=tmp_path)
    assert _notes(result)["train_data_dir"].status == "dataset"
    assert result.folders == {"train_data_dir": str(tmp_path / "train"), "reg_data_dir": str(tmp_path / "reg")}
    cfg, notes = load_any_config(args)
    spec = load_dataset_config(cfg.dataset.dataset_config)
    train, reg = spec.all_subsets()
    assert (train.num_repeats, train.class_tokens, train.is_reg) == (10, "mycat", False)
    assert (reg.num_repeats, reg.class_tokens, reg.is_reg) == (2, "cat", True)
    assert train.caption_extension == ".caption" and spec.datasets[0].resolution == (768, 1024)
    assert any("10_mycat" in n and "x10" in n for n in notes)
    (tmp_path / "empty").mkdir()
    args.write_text(f'train_data_dir = "{(tmp_path / "empty").as_posix()}"\n')
    with pytest.raises(ConfigError, match="no <repeats>_<class tokens> subfolder"):
        load_any_config(args)


def test_load_any_config(tmp_path, files):
    args, _ = files
    ours = save_config(RunConfig().with_values(network_dim=8), tmp_path / "ours.toml")
    cfg, notes = load_any_config(ours)
    assert cfg.network.network_dim == 8 and notes == []
    cfg, notes = load_any_config(args)
    assert cfg.network.network_dim == 32 and "sd-scripts args file" in notes[0]
    assert any("xformers" in line for line in notes)


def test_import_export_import_round_trip(tmp_path, files):
    args, dataset = files
    first = import_kohya(args).config.with_values(text_encoder_lr2=1e-5, fused_backward_pass=True, skip_bad_images=True)
    result = export_kohya(first, tmp_path / "export")
    assert result.args_path.name == "sdxl_train_network.toml" and result.dataset_path.name == "dataset.toml"
    assert "sdxl_train_network.py --config_file" in result.command and result.command.startswith("accelerate launch")
    assert any("two text-encoder rates" in n for n in result.notes)
    assert any("fused_backward_pass" in n for n in result.notes)
    exported = read_toml(result.args_path)
    assert set(exported) >= {"model_arguments", "additional_network_arguments", "optimizer_arguments"}
    flat = flatten_args({k: v for k, v in exported.items() if k != "sdxl_tui"})
    sd_scripts_names = set(option_index()) - {"skip_bad_images", "log_every_n_steps", "text_encoder_lr1",
                                              "text_encoder_lr2"} | {"text_encoder_lr"}
    assert set(flat) <= sd_scripts_names
    assert flat["text_encoder_lr"] == [2e-5, 1e-5] and flat["save_precision"] == "float"
    second = import_kohya(result.args_path).config
    assert second.dataset.dataset_config == str(result.dataset_path)
    # the tokenizers sd-scripts reads offline come along (engine/interop/kohya_tokenizers.py)
    tokenizers = tmp_path / "export" / "tokenizer_cache"
    assert second == first.with_values(dataset_config=str(result.dataset_path), tokenizer_cache_dir=str(tokenizers))
    before, after = load_dataset_config(dataset), load_dataset_config(result.dataset_path)
    assert [s.image_dir for s in after.all_subsets()] == [s.image_dir for s in before.all_subsets()]
    assert [s.num_repeats for s in after.all_subsets()] == [10]


def test_commands(tmp_path, files, capsys):
    args, dataset = files
    out = tmp_path / "run.toml"
    assert main(["import-kohya", str(args), "--dataset-config", str(dataset), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "renamed   text_encoder_lr" in printed and f"wrote {out}" in printed
    cfg = load_config(out)
    assert cfg.network.network_dim == 32 and cfg.dataset.dataset_config == str(dataset.resolve())
    assert main(["export-kohya", str(out), "-o", str(tmp_path / "k")]) == 0
    printed = capsys.readouterr().out
    assert "accelerate launch" in printed and (tmp_path / "k" / "dataset.toml").is_file()
    ours = save_config(RunConfig(), tmp_path / "ours.toml")
    assert main(["import-kohya", str(ours), "-o", str(tmp_path / "x.toml")]) == 78


def test_command_line_matches_the_args_file(files):
    args, dataset = files
    cfg = import_kohya(args).config.with_values(text_encoder_lr2=1e-5, lr_warmup_steps=50)
    line = kohya_command_line(cfg)
    assert line.startswith("accelerate launch") and "sdxl_train_network.py" in line
    flags = line.replace("\\\n", " ").split()
    assert "--gradient_checkpointing" in flags and "--network_train_unet_only" not in flags
    assert "--text_encoder_lr 2e-05 1e-05" in " ".join(flags)
    assert "--network_args conv_dim=8 conv_alpha=1" in " ".join(flags)
    assert "--lr_warmup_steps=50" in flags and f"--dataset_config={dataset.as_posix()}" in flags
