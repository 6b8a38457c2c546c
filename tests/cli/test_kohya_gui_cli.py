"""kohya_ss GUI JSON at the command line: import-kohya, plan and train read it; a refused
preset exits 78 naming the key; export-kohya --gui writes one back.

The commands run in this process (`sdxl_tui.cli.main`, what the `sdxl-tui` script calls): what is
checked here is what they read and write, not the process around them (tests/cli/test_cli_robust.py
and test_cli_train.py check exit codes of real processes)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from train_helpers import one_torch_thread  # noqa: F401  (autouse fixture)


@pytest.fixture()
def cli(capsys):
    """Run `sdxl-tui ARGS...` in this process: (returncode, stdout, stderr)."""
    def run(*args: str) -> SimpleNamespace:
        from sdxl_tui.cli import main

        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)
    return run


def _gui_config(tmp_path: Path, tiny_model, demo_dataset) -> Path:
    """What the GUI's "Save config" writes, with a model, a folder-style dataset and an output folder."""
    shutil.copytree(demo_dataset.image_dir, tmp_path / "img" / "2_shape")
    (tmp_path / "img" / "notes").mkdir()  # no repeat count: skipped with the fix, as sd-scripts does
    gui = {"LoRA_type": "Standard", "sdxl": True, "pretrained_model_name_or_path": str(tiny_model.diffusers_dir),
           "train_data_dir": "img", "reg_data_dir": "", "output_dir": "out", "output_name": "gui_lora",
           "max_resolution": "64,64", "enable_bucket": True, "min_bucket_reso": 32, "max_bucket_reso": 128,
           "bucket_reso_steps": 32, "caption_extension": ".txt", "train_batch_size": 4, "epoch": 1,
           "max_train_steps": 2, "optimizer": "AdamW", "optimizer_args": "", "learning_rate": 0.001,
           "unet_lr": 0.001, "text_encoder_lr": 0, "network_dim": 2, "network_alpha": 1, "lr_warmup": 0,
           "lr_scheduler": "constant", "mixed_precision": "no", "save_precision": "fp32",
           "gradient_checkpointing": False, "cache_latents": True, "xformers": "none", "seed": "7",
           "noise_offset_type": "Original", "noise_offset": 0, "additional_parameters": "",
           "num_processes": 1, "num_cpu_threads_per_process": 2, "sample_prompts": ""}
    path = tmp_path / "my_lora.json"
    path.write_text(json.dumps(gui, indent=4))
    return path


@pytest.mark.e2e
def test_train_a_gui_json_with_a_folder_dataset(tmp_path, tiny_model, demo_dataset, cli):
    path = _gui_config(tmp_path, tiny_model, demo_dataset)
    done = cli("train", str(path), "--plain")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kohya_ss GUI config; converted" in done.stderr
    assert "'notes' is skipped" in done.stderr and "'10_notes'" in done.stderr
    out = tmp_path / "out"
    from safetensors import safe_open

    with safe_open(str(out / "gui_lora.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not [k for k in keys if k.startswith("lora_te")]  # text_encoder_lr 0: UNet only
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "Finished"
    dataset = (out / "kohya_gui.dataset.toml").read_text()
    assert "num_repeats = 2" in dataset and 'class_tokens = "shape"' in dataset


def test_import_plan_and_export_a_gui_json(tmp_path, tiny_model, demo_dataset, cli):
    path = _gui_config(tmp_path, tiny_model, demo_dataset)
    done = cli("import-kohya", str(path), "-o", str(tmp_path / "run.toml"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "converted LoRA_type: Standard -> network_module = networks.lora" in done.stdout
    done = cli("plan", str(tmp_path / "run.toml"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "12 images × 2 repeats, class tokens 'shape'" in done.stdout
    assert "steps per epoch: 6" in done.stdout  # 12 images × 2 repeats / batch 4
    done = cli("export-kohya", str(tmp_path / "run.toml"), "-o", str(tmp_path / "back"), "--gui")
    assert done.returncode == 0, done.stderr[-3000:]
    back = json.loads((tmp_path / "back" / "kohya_gui.json").read_text())
    assert back["LoRA_type"] == "Standard" and back["network_dim"] == 2 and back["max_train_steps"] == 2


def test_refused_preset_exits_78_naming_the_key(tmp_path, cli):
    gui = {"LoRA_type": "LyCORIS/LoKr", "sdxl": True, "optimizer": "AdamW", "learning_rate": 1e-4,
           "factor": 4, "max_resolution": "1024,1024", "network_dim": 8, "network_alpha": 8}
    (tmp_path / "lokr.json").write_text(json.dumps(gui))
    done = cli("import-kohya", str(tmp_path / "lokr.json"), "-o", str(tmp_path / "run.toml"))
    try:
        from engine.config.learning_sections import NetworkSection

        NetworkSection.model_validate({"network_module": "lycoris.kohya"})
    except Exception:
        assert done.returncode == 78 and "LoRA_type" in done.stderr and "lycoris.kohya" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    (tmp_path / "bad.json").write_text("{ not json")
    done = cli("import-kohya", str(tmp_path / "bad.json"), "-o", str(tmp_path / "run.toml"))
    assert done.returncode == 78 and "malformed JSON at line 1" in done.stderr
