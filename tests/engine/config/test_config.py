"""RunConfig: TOML round trips, comments kept, errors with lines, --set, templates."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.schema import RunConfig, option_index, resolve_relative_paths
from engine.config.toml_file import (
    apply_sets,
    dumps_config,
    load_config,
    load_config_with_document,
    loads_config,
    save_config,
)
from engine.errors import ConfigError

TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "sdxl_tui" / "templates").glob("*.toml"))
REFERENCE_OPTIONS = """pretrained_model_name_or_path vae dataset_config output_dir output_name save_model_as
network_module network_dim network_alpha network_dropout network_args network_train_unet_only network_weights
learning_rate unet_lr text_encoder_lr1 text_encoder_lr2 optimizer_type optimizer_args lr_scheduler lr_warmup_steps
max_train_steps max_train_epochs gradient_accumulation_steps max_grad_norm mixed_precision gradient_checkpointing
cache_latents cache_latents_to_disk cache_text_encoder_outputs cache_text_encoder_outputs_to_disk no_half_vae
fused_backward_pass seed save_every_n_epochs save_every_n_steps save_last_n_epochs save_state save_precision
sample_prompts sample_every_n_steps sample_every_n_epochs sample_sampler noise_offset min_snr_gamma logging_dir
log_with tokenizer_cache_dir clip_skip v2 v_parameterization""".split()


def test_every_sd_scripts_option_the_issue_names_exists():
    missing = [name for name in REFERENCE_OPTIONS if name not in option_index()]
    assert missing == []


def test_every_field_has_help_and_default():
    from engine.config.schema import SECTIONS

    for section, cls in SECTIONS.items():
        for key, info in cls.model_fields.items():
            assert info.description, f"{section}.{key} has no help text"
            assert not info.is_required(), f"{section}.{key} has no default"


def test_default_round_trip_is_exact():
    cfg = RunConfig()
    assert loads_config(dumps_config(cfg)) == cfg


def test_written_file_comments_every_key():
    text = dumps_config(RunConfig())
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#") and not line.startswith("schema_version"):
            key = line.split("=")[0].strip()
            assert lines[index - 1].startswith(f"# {key}:"), line


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_templates_load_validate_and_round_trip(template, tmp_path):
    cfg, doc = load_config_with_document(template)
    out = tmp_path / "copy.toml"
    save_config(cfg, out, base=doc)
    assert load_config(out) == cfg
    assert out.read_text() == template.read_text()  # an unchanged config writes back unchanged


def test_user_comments_survive_load_edit_save(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(dumps_config(RunConfig()).replace(
        "[network]", "[network]\n# my note: rank 16 was too weak for faces"))
    cfg, doc = load_config_with_document(path)
    save_config(cfg.with_values(network_dim=32), path, base=doc)
    text = path.read_text()
    assert "# my note: rank 16 was too weak for faces" in text
    assert load_config(path).network.network_dim == 32


def test_unknown_key_names_line_and_nearest(tmp_path):
    path = tmp_path / "bad.toml"
    text = dumps_config(RunConfig()).replace("network_dim = 16", "network_dimm = 16")
    path.write_text(text)
    line = text.splitlines().index("network_dimm = 16") + 1
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.line == line
    assert f"bad.toml:{line}" in str(err.value) and "network_dim" in str(err.value.hint)


def test_unknown_section_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        loads_config("[netwrk]\nnetwork_dim = 4\n")
    assert "network" in err.value.hint and err.value.line == 1


def test_wrong_type_names_key_path_and_line():
    text = dumps_config(RunConfig()).replace("learning_rate = 0.0001", 'learning_rate = "fast"')
    with pytest.raises(ConfigError) as err:
        loads_config(text)
    assert err.value.key == "optimizer.learning_rate"
    assert err.value.line == text.splitlines().index('learning_rate = "fast"') + 1
    assert "number" in str(err.value)


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError) as err:
        loads_config("[network]\nnetwork_dim = 0\n")
    assert "network.network_dim" in str(err.value)


def test_malformed_toml_gives_line_and_column(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[network]\nnetwork_dim = [16\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.line == 3 or err.value.line == 2
    assert "column" in str(err.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert "not found" in str(err.value) and err.value.hint


def test_newer_schema_version_is_refused():
    with pytest.raises(ConfigError, match="newer"):
        loads_config("schema_version = 99\n")


def test_apply_sets_flat_and_qualified_names():
    cfg = apply_sets(RunConfig(), ["network_dim=8", "optimizer.unet_lr=3e-4", "output_name=my lora",
                                   "save_state=true", "network_args=[\"conv_dim=4\"]"])
    assert cfg.network.network_dim == 8 and cfg.optimizer.unet_lr == 3e-4
    assert cfg.saving.output_name == "my lora" and cfg.saving.save_state is True
    assert cfg.network.conv_dim == 4 and cfg.network.conv_alpha == 1.0  # sd-scripts' default


def test_apply_sets_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="did you mean 'network_dim'"):
        apply_sets(RunConfig(), ["netwrk_dim=8"])
    with pytest.raises(ConfigError, match="network_dim"):
        apply_sets(RunConfig(), ["network_dim=abc"])


def test_learning_rates_default_to_learning_rate():
    cfg = RunConfig().with_values(learning_rate=3e-4, text_encoder_lr2=1e-5)
    o = cfg.optimizer
    assert (o.resolved_unet_lr, o.resolved_text_encoder_lr1, o.resolved_text_encoder_lr2) == (3e-4, 3e-4, 1e-5)


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.network.network_dim = 3  # type: ignore[misc]


def test_relative_paths_resolve_against_config_folder(tmp_path):
    (tmp_path / "model").mkdir()
    cfg = RunConfig().with_values(pretrained_model_name_or_path="model", dataset_config="ds.toml",
                                  output_dir="out", vae="madebyollin/sdxl-vae-fp16-fix")
    resolved = resolve_relative_paths(cfg, tmp_path)
    assert resolved.model.pretrained_model_name_or_path == str(tmp_path / "model")
    assert resolved.dataset.dataset_config == str(tmp_path / "ds.toml")
    assert resolved.saving.output_dir == str(tmp_path / "out")
    assert resolved.model.vae == "madebyollin/sdxl-vae-fp16-fix"  # a Hub id stays


def test_importing_engine_and_cli_never_imports_textual_or_torch():
    code = ("import sys, engine, engine.config.schema, engine.config.toml_file, engine.config.rules, "
            "engine.events.types, engine.control.run_control;"
            "assert 'textual' not in sys.modules, 'textual';"
            "assert 'sdxl_tui' not in sys.modules, 'sdxl_tui';"
            "assert 'torch' not in sys.modules, 'torch';"
            "import sdxl_tui, sdxl_tui.cli; sdxl_tui.cli.build_parser();"
            "assert 'torch' not in sys.modules, 'torch via cli'")
    subprocess.run([sys.executable, "-c", code], check=True)
