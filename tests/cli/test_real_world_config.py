"""Issue 15 items 4, 5, 7, 8, 9 and 10 (the files around the images): prompt files, run and
dataset TOMLs with Windows paths, sd-scripts args TOMLs with their own section names, and
messages that must not contradict themselves. Everything here fails before a model loads."""
from __future__ import annotations

import json

import pytest
from train_helpers import one_torch_thread, tiny_config  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.sample_prompts import read_sample_prompts
from engine.config.schema import RunConfig
from engine.config.toml_file import load_config, save_config
from engine.errors import ConfigError


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from sdxl_tui.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- item 4: prompt files --------------------------------------------------------------------

def test_prompt_file_in_a_windows_code_page_exits_78_naming_file_and_offset(tmp_path, tiny_model, demo_dataset,
                                                                           capsys, no_model_load):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a caf\u00e9 --w 64 --h 64\n".encode("cp1252"))
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, sample_prompts=str(prompts), sample_every_n_steps=1)
    run_toml = save_config(cfg, tmp_path / "run.toml")
    for command in ("train", "plan"):
        code, said = _cli([command, str(run_toml)], capsys)
        assert code == 78, said
        assert f"{prompts}: sample prompts file is not UTF-8 text: byte 0xe9 at offset 5" in said
        assert "Traceback" not in said
    assert not (tmp_path / "out").exists()


def test_json_and_toml_prompt_files_with_a_bom_parse(tmp_path):
    js = tmp_path / "p.json"
    js.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"prompt": "a dog", "width": 640}, "a cat --h 320"]).encode())
    prompts, _ = read_sample_prompts(js)
    assert [(p.prompt, p.width, p.height) for p in prompts] == [("a dog", 640, 512), ("a cat", 512, 320)]
    tm = tmp_path / "p.toml"
    tm.write_bytes(b"\xef\xbb\xbf[prompt]\nwidth = 768\n[[prompt.subset]]\nprompt = \"a bird\"\n")
    assert [(p.prompt, p.width) for p in read_sample_prompts(tm)[0]] == [("a bird", 768)]


# --- item 5: prompt options checked up front ---------------------------------------------------

@pytest.mark.parametrize("line,words", [
    ("a cat --d 99999999999999999999", "seed (--d) = 99999999999999999999 is outside 0..18446744073709551615"),
    ("a cat --w 0", "width (--w) = 0 is outside 32..8192"),
    ("a cat --h 100000", "height (--h) = 100000 is outside 32..8192"),
    ("a cat --s 0", "sample_steps (--s) = 0 is outside 1..1000"),
    ("a cat --s 5000", "sample_steps (--s) = 5000 is outside 1..1000"),
    ("a cat --l -3", "scale (--l) = -3.0 is outside 0.0..100.0"),
    ("a cat --l nan", "scale (--l) = nan is outside 0.0..100.0"),
    ("a cat --d -7", "seed (--d) = -7 is outside 0..18446744073709551615 (or -1 for a random seed)"),
])
def test_prompt_values_out_of_range_are_refused_by_name(tmp_path, line, words):
    path = tmp_path / "p.txt"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        read_sample_prompts(path)
    assert words in str(caught.value) and caught.value.exit_code == 78


def test_huge_seed_stops_train_before_the_model_and_before_any_step(tmp_path, tiny_model, demo_dataset, capsys,
                                                                    no_model_load):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat --d 99999999999999999999\n")
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, sample_prompts=str(prompts), sample_every_n_steps=1)
    code, said = _cli(["train", str(save_config(cfg, tmp_path / "run.toml"))], capsys)
    assert code == 78 and "seed (--d) = 99999999999999999999 is outside" in said
    assert not (tmp_path / "out").exists()


def test_seed_minus_one_is_random_and_single_dash_options_are_warned(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat --d -1 --w 640\na dog -w 640 -h 480 --s 20\na bird --g 3\n")
    prompts, warnings = read_sample_prompts(path)
    assert prompts[0].seed is None and prompts[0].width == 640
    assert prompts[1].prompt == "a dog -w 640 -h 480" and prompts[1].width == 512 and prompts[1].sample_steps == 20
    assert warnings == [
        f"{path}: sample prompt 2: '-w 640' is prompt text, not an option: write --w 640 (two dashes)",
        f"{path}: sample prompt 2: '-h 480' is prompt text, not an option: write --h 480 (two dashes)",
        f"{path}: sample prompt 3: --g is not an option sdxl-tui uses for samples (known: --ss, --w, --h, --d, --s, "
        "--l, --n); it is left out",
    ]


# --- item 7: plan = train ----------------------------------------------------------------------

def test_plan_refuses_what_train_refuses_with_the_same_message(tmp_path, tiny_model, demo_dataset, capsys,
                                                               no_model_load):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, cache_text_encoder_outputs=True,
                      network_train_unet_only=False)
    run_toml = save_config(cfg, tmp_path / "run.toml")
    said = {}
    for command in ("plan", "train"):
        argv = [command, str(run_toml), "--plain"] if command == "train" else [command, str(run_toml)]
        code, said[command] = _cli(argv, capsys)
        assert code == 78
    message = "cache_text_encoder_outputs needs network_train_unet_only = true"
    assert message in said["plan"] and message in said["train"]
    lines = {command: [ln for ln in text.splitlines() if message in ln] for command, text in said.items()}
    assert lines["plan"] == lines["train"]


def test_the_wizard_lists_the_same_refusal(tmp_path, tiny_model, demo_dataset, capsys):
    from engine.plan.checks import check_config
    from sdxl_tui.wizard_state import WizardState

    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, cache_text_encoder_outputs=True,
                      network_train_unet_only=False)
    wizard = [i.message for i in WizardState(cfg=cfg).issues() if i.level == "error"]
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert wizard and all(f"  - {message}" in str(caught.value) for message in wizard)


def test_plan_lists_the_rule_warnings_train_gives(tmp_path, tiny_model, demo_dataset, capsys):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=5, max_train_epochs=2)
    code, said = _cli(["plan", str(save_config(cfg, tmp_path / "run.toml"))], capsys)
    assert code == 0 and "! both max_train_steps and max_train_epochs are set: max_train_steps limits the run" in said


# --- item 8: Windows paths ---------------------------------------------------------------------

def test_double_quoted_windows_path_that_does_not_parse_gets_the_quoting_hint(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('schema_version = 1\n[dataset]\ndataset_config = "C:\\Users\\me\\data.toml"\n')
    code, said = _cli(["plan", str(path)], capsys)
    assert code == 78 and "malformed TOML at line 3" in said
    assert "write Windows paths in single quotes ('C:\\data\\set') or with forward slashes" in said


@pytest.mark.parametrize("where", ["run", "dataset"])
def test_a_path_turned_into_control_characters_is_named_escaped_on_one_line(tmp_path, where):
    if where == "run":
        path = tmp_path / "run.toml"
        path.write_text('[saving]\noutput_dir = "C:\\temp\\new"\n')
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        expected = 'saving.output_dir = "C:\\temp\\new" holds control characters (newline, tab)'
    else:
        from engine.data.dataset_config import load_dataset_config

        path = tmp_path / "d.toml"
        path.write_text('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "D:\\train\\roses"\n')
        with pytest.raises(ConfigError) as caught:
            load_dataset_config(path)
        expected = ('datasets[0].subsets[0].image_dir = "D:\\train\\roses" holds control characters '
                    '(carriage return, tab)')
    message = str(caught.value).split("\n  → ")[0]
    assert expected in message and "\n" not in message and "\t" not in message and "\r" not in message
    assert "single quotes" in caught.value.hint


# --- item 9: messages that must not contradict themselves ---------------------------------------

def test_nan_hint_never_suggests_the_value_already_set():
    from engine.train.divergence import divergence_hint
    from engine.train.loop import _diverged

    assert "max_grad_norm" not in divergence_hint(RunConfig().with_values(max_grad_norm=1.0))
    assert "set max_grad_norm = 1.0 (gradient clipping is off)" in divergence_hint(
        RunConfig().with_values(max_grad_norm=0))
    assert "lower max_grad_norm (now 5) to 1.0" in divergence_hint(RunConfig().with_values(max_grad_norm=5.0))
    fp16 = divergence_hint(RunConfig().with_values(mixed_precision="fp16", no_half_vae=True))
    assert "bf16" in fp16 and "no_half_vae" not in fp16
    kept = _diverged(7, ["a.png"], float("nan"), RunConfig(), "/out/lora-step00000005.safetensors")
    assert "the last good LoRA is kept: /out/lora-step00000005.safetensors" in kept.message
    none = _diverged(2, ["a.png"], float("inf"), RunConfig(), "")
    assert "last good LoRA is kept" not in none.message and "no LoRA had been saved before it" in none.message


def test_resume_with_no_more_epochs_says_so_instead_of_a_difference(tmp_path):
    from engine.outputs.checkpoint import Position
    from engine.outputs.resume import ResumePoint, check_resume_config

    saved = RunConfig().with_values(max_train_epochs=3)
    position = Position(global_step=30, epoch=3, batches_done_in_epoch=0)
    point = ResumePoint(tmp_path / "state" / "step-00000030", position, saved)
    with pytest.raises(ConfigError) as caught:
        check_resume_config(point, saved)
    text = str(caught.value)
    assert "differ" not in text and "→ 3" not in text and "set them back" not in text
    assert "the run has already trained as long as asked" in text
    assert "max_train_epochs = 3: the run has already done 3 epochs; set more epochs to continue " \
           "(e.g. --set max_train_epochs=4)" in text
    with pytest.raises(ConfigError) as both:
        check_resume_config(point, saved.with_values(network_dim=64))
    assert "network.network_dim: 16 → 64" in str(both.value) and "already trained as long as asked" in str(both.value)


# --- item 10: sd-scripts args TOML by content --------------------------------------------------

def test_args_toml_with_its_own_section_names_is_converted(tmp_path, demo_dataset):
    from engine.interop.kohya_import import load_any_config

    path = tmp_path / "args.toml"
    path.write_text(f'[model]\npretrained_model_name_or_path = "stabilityai/stable-diffusion-xl-base-1.0"\n'
                    f'[data]\ndataset_config = "{demo_dataset.dataset_toml}"\ncache_latents = true\n'
                    f'[train]\noutput_dir = "{tmp_path / "out"}"\nmax_train_steps = 10\nlearning_rate = 3e-4\n'
                    f'network_module = "networks.lora"\nnetwork_dim = 8\n')
    cfg, notes = load_any_config(path)
    assert notes[0] == f"{path} is an sd-scripts args file; converted:"
    assert (cfg.network.network_dim, cfg.training.max_train_steps, cfg.optimizer.learning_rate) == (8, 10, 3e-4)
    assert cfg.caching.cache_latents is True


def test_a_file_that_could_be_either_names_both_readings_and_import_kohya(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[model]\npretrained_model_name_or_path = "x"\n[training]\nmax_train_step = 5\n'
                    'max_train_steps = 5\n')
    code, said = _cli(["plan", str(path)], capsys)
    assert code == 78
    assert "read as an sdxl-tui config: unknown key 'max_train_step' in [training]" in said
    assert "read as an sd-scripts args TOML: 'max_train_step' is not an sd-scripts option" in said
    assert f"sdxl-tui import-kohya {path}" in said
    code, said = _cli(["import-kohya", str(path), "-o", str(tmp_path / "converted.toml")], capsys)
    assert code == 0 and "max_train_step" in said  # named as a key sdxl-tui does not know


def test_our_file_without_schema_version_is_still_ours(tmp_path):
    from engine.interop.kohya_import import load_any_config

    path = tmp_path / "run.toml"
    path.write_text('[network]\nnetwork_dim = 12\n')
    cfg, notes = load_any_config(path)
    assert cfg.network.network_dim == 12 and notes == []
