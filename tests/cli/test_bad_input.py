"""Every item of issue 7's "Bad input" list, with real files: a specific message naming the
thing and what to do, the right exit code, and nothing lost. Config, model and dataset
problems are found before any model loads (`engine.model.load.load_sdxl` is never called)."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.toml_file import save_config
from engine.events.types import Failed, Finished, Warning_


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from sdxl_tui.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("text, expected", [
    (None, "file not found"),
    ('[network]\nnetwork_dim = 4\n[model\n', "malformed TOML at line 3"),
    ('[network]\nnetwork_dimm = 4\n', "unknown key 'network_dimm' in [network]"),
    ('[network]\nnetwork_dim = "big"\n', "network.network_dim: Input should be a valid integer"),
    ('[network]\nnetwork_dim = 0\n', "network.network_dim: Input should be greater than or equal to 1 (got 0)"),
    ('[optimizer]\nlearning_rate = -1\n', "optimizer.learning_rate: Input should be greater than 0"),
])
def test_config_errors_exit_78_with_line_and_fix_before_any_model(tmp_path, capsys, no_model_load, text, expected):
    path = tmp_path / "run.toml"
    if text is not None:
        path.write_text(text)
    code, said = _cli(["train", str(path)], capsys)
    assert code == 78
    assert expected in said, said
    if "network_dimm" in said:
        assert "did you mean 'network_dim'" in said and "run.toml:2" in said
    if "malformed" in said:
        assert "col" in said  # line and column
    if "valid integer" in said:
        assert "LoRA rank" in said  # the option's help as the hint
    assert not no_model_load


def test_conflicting_options_exit_78_before_the_model_and_the_output_folder(tmp_path, tiny_model, demo_dataset,
                                                                            capsys, no_model_load):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, cache_text_encoder_outputs=True,
                      network_train_unet_only=False)
    code, said = _cli(["train", str(save_config(cfg, tmp_path / "run.toml"))], capsys)
    assert code == 78
    assert "cache_text_encoder_outputs needs network_train_unet_only = true" in said
    assert not no_model_load and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- model

def _run_with_model(tmp_path, tiny_model, demo_dataset, model: str):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, pretrained_model_name_or_path=model)
    run = train(cfg)
    failed = run.of(Failed)[-1]
    return run, failed


def _assert_model_error(run, failed, tmp_path, *texts: str) -> None:
    assert run.result.exit_code == 66 and failed.kind == "ModelError"
    for text in texts:
        assert text in failed.message + " " + failed.hint, (failed.message, failed.hint)
    assert not (tmp_path / "out").exists(), "a bad model must not claim the output folder"


def test_model_path_missing(tmp_path, tiny_model, demo_dataset, no_model_load):
    run, failed = _run_with_model(tmp_path, tiny_model, demo_dataset, str(tmp_path / "no" / "model.safetensors"))
    _assert_model_error(run, failed, tmp_path, "model not found", "check the path")


def test_sd15_shaped_file_is_named_as_such(tmp_path, tiny_model, demo_dataset, no_model_load):
    import torch
    from safetensors.torch import save_file

    sd15 = tmp_path / "v1-5-pruned.safetensors"
    save_file({
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(640, 768,
                                                                                                   dtype=torch.float16),
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3, dtype=torch.float16),
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": torch.zeros(
            77, 768, dtype=torch.float16),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3, dtype=torch.float16),
    }, str(sd15))
    run, failed = _run_with_model(tmp_path, tiny_model, demo_dataset, str(sd15))
    _assert_model_error(run, failed, tmp_path, "looks like Stable Diffusion 1.x (cross-attention width 768",
                        "choose an SDXL base checkpoint")


@pytest.mark.parametrize("damage", ["truncated", "garbage header"])
def test_corrupt_or_truncated_safetensors(tmp_path, tiny_model, demo_dataset, no_model_load, damage):
    broken = tmp_path / "model.safetensors"
    data = tiny_model.single_file.read_bytes()
    broken.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 64 + data[64:])
    run, failed = _run_with_model(tmp_path, tiny_model, demo_dataset, str(broken))
    _assert_model_error(run, failed, tmp_path, "is not a readable .safetensors file", "download it again")


class _Trap:
    """Unpickling this writes a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled!"))


def test_pickle_ckpt_is_refused_and_never_unpickled(tmp_path, tiny_model, demo_dataset, no_model_load,
                                                    monkeypatch):
    import torch

    marker = tmp_path / "UNPICKLED"
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": _Trap(str(marker))}))
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    monkeypatch.setattr(pickle, "load", lambda *a, **k: loads.append(a) or {})
    run, failed = _run_with_model(tmp_path, tiny_model, demo_dataset, str(ckpt))
    _assert_model_error(run, failed, tmp_path, "is a pickle checkpoint (.ckpt)", "refused",
                        "convert it to .safetensors")
    assert not marker.exists() and not loads


def test_hub_id_offline_and_not_cached(tmp_path, tiny_model, demo_dataset, no_model_load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, failed = _run_with_model(tmp_path, tiny_model, demo_dataset, "nobody-here/no-such-sdxl-model")
    _assert_model_error(run, failed, tmp_path, "nobody-here/no-such-sdxl-model is not in the Hugging Face cache",
                        "HF_HUB_OFFLINE", "hf download")


# ---------------------------------------------------------------- dataset

@pytest.fixture()
def dataset_copy(tmp_path, demo_dataset):
    """The demo images and captions in a folder of this test's own, with class tokens."""
    images = tmp_path / "images"
    shutil.copytree(demo_dataset.image_dir, images)
    toml = tmp_path / "dataset.toml"
    toml.write_text(f'''[general]
caption_extension = ".txt"
enable_bucket = true

[[datasets]]
resolution = 64
batch_size = 2
bucket_reso_steps = 32
min_bucket_reso = 32
max_bucket_reso = 128

  [[datasets.subsets]]
  image_dir = "{images}"
  class_tokens = "shape"
''')
    return toml, images


def _run_on(tmp_path, tiny_model, toml: Path, **options):
    from engine.config.schema import RunConfig

    base = dict(pretrained_model_name_or_path=str(tiny_model.diffusers_dir), dataset_config=str(toml),
                output_dir=str(tmp_path / "out"), max_train_steps=1, mixed_precision="no",
                gradient_checkpointing=False, optimizer_type="AdamW", network_dim=4, network_alpha=4.0,
                save_precision="fp32", log_every_n_steps=1)
    base.update(options)
    return train(RunConfig().with_values(**base))


def _data_failure(run) -> str:
    assert run.result.exit_code == 65, run.result.error
    failed = run.of(Failed)[-1]
    assert failed.kind == "DataError"
    return failed.message + "\n" + failed.hint


def test_dataset_folder_missing(tmp_path, tiny_model, dataset_copy, no_model_load):
    toml, images = dataset_copy
    shutil.rmtree(images)
    said = _data_failure(_run_on(tmp_path, tiny_model, toml))
    assert f"{images}: image folder not found" in said
    assert not (tmp_path / "out").exists()


def test_dataset_folder_empty(tmp_path, tiny_model, dataset_copy, no_model_load):
    toml, images = dataset_copy
    for path in images.iterdir():
        path.unlink()
    said = _data_failure(_run_on(tmp_path, tiny_model, toml))
    assert f"{images}: no images" in said


def _truncate(png: Path) -> None:
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])


def test_truncated_png_is_named_before_the_model_loads(tmp_path, tiny_model, dataset_copy, no_model_load):
    toml, images = dataset_copy
    bad = sorted(images.glob("*.png"))[3]
    _truncate(bad)
    said = _data_failure(_run_on(tmp_path, tiny_model, toml))
    assert bad.name in said and "skip_bad_images = true" in said


@pytest.mark.e2e
def test_skip_bad_images_turns_it_into_a_warning_with_a_count(tmp_path, tiny_model, dataset_copy):
    toml, images = dataset_copy
    bad = sorted(images.glob("*.png"))[:2]
    for png in bad:
        _truncate(png)
    run = _run_on(tmp_path, tiny_model, toml, skip_bad_images=True)
    assert run.result.ok, run.result.error
    warnings = [w.message for w in run.of(Warning_)]
    assert any(w.startswith("2 unreadable image(s) skipped") for w in warnings), warnings
    assert all(any(png.name in w for w in warnings) for png in bad)


def _scan(toml: Path):
    from engine.data.dataset_config import load_dataset_config
    from engine.data.scan import scan_dataset

    return scan_dataset(load_dataset_config(toml), strict=False)


def test_caption_without_image_is_a_warning(tmp_path, dataset_copy):
    toml, images = dataset_copy
    (images / "lonely.txt").write_text("a caption for no image")
    scanned = _scan(toml)
    assert any("lonely.txt: caption file without a matching image" in w for w in scanned.warnings)
    assert not scanned.problems


def test_image_without_caption_uses_class_tokens_with_a_warning(tmp_path, dataset_copy):
    toml, images = dataset_copy
    image = sorted(images.glob("*.png"))[0]
    (images / f"{image.stem}.txt").unlink()
    scanned = _scan(toml)
    assert any(f"{image}: no caption file {image.stem}.txt; using class_tokens 'shape'" in w
               for w in scanned.warnings)
    assert [item.caption for item in scanned.items if item.path == image] == ["shape"]


def test_non_utf8_caption_is_named_with_the_byte(tmp_path, tiny_model, dataset_copy, no_model_load):
    toml, images = dataset_copy
    caption = sorted(images.glob("*.txt"))[0]
    caption.write_bytes("café au lait".encode("latin-1"))
    said = _data_failure(_run_on(tmp_path, tiny_model, toml))
    assert f"{caption}: caption file is not UTF-8 text: byte 0xe9 at offset 3 is not valid UTF-8" in said


def test_tiny_image_far_below_the_bucket_is_a_warning(tmp_path, dataset_copy):
    from PIL import Image

    toml, images = dataset_copy
    Image.new("RGB", (8, 8), "red").save(images / "tiny.png")
    (images / "tiny.txt").write_text("a red square")
    scanned = _scan(toml)
    assert any("tiny.png: 8x8 is enlarged" in w and "it will look soft" in w for w in scanned.warnings), \
        scanned.warnings


# ---------------------------------------------------------------- training

@pytest.mark.e2e
def test_nan_loss_stops_with_step_and_files_keeps_the_last_good_checkpoint(tmp_path, tiny_model, demo_dataset):
    """A real NaN: SGD at an absurd rate overflows the weights within a few steps."""
    import torch
    from safetensors.torch import load_file

    from engine.outputs import checkpoint

    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=30, optimizer_type="SGD",
                      learning_rate=1e12, max_grad_norm=0.0, save_every_n_steps=1, save_state=True)
    run = train(cfg)
    assert run.result.exit_code == 70
    failed = run.of(Failed)[-1]
    assert failed.kind == "TrainingDiverged" and f"at step {failed.step} (batch: " in failed.message
    names = failed.message.split("(batch: ")[1].split(")")[0].split(", ")
    assert names and all((demo_dataset.image_dir / name).is_file() for name in names), names
    # fp32 run with clipping off: the advice is what would change something here (issue 15 item 9)
    assert "lower the learning rate (now 1e+12)" in failed.hint and "set max_grad_norm = 1.0" in failed.hint
    assert "no_half_vae" not in failed.hint
    assert f"the last good LoRA is kept: {failed.last_good}" in failed.message
    last_good = Path(failed.last_good)
    assert all(torch.isfinite(t).all() for t in load_file(str(last_good)).values())
    good_step = int(last_good.stem.split("step")[-1])
    assert good_step < failed.step
    state = checkpoint.latest_state(Path(cfg.saving.output_dir))
    assert state.name == f"step-{good_step:08d}"
    assert all(torch.isfinite(t).all() for t in checkpoint.load_state(state).lora.values())
    assert not (Path(cfg.saving.output_dir) / f"lora-step{failed.step:08d}.safetensors").exists()


def test_oom_message_names_settings_that_fit():
    from types import SimpleNamespace

    from engine.config.schema import RunConfig
    from engine.plan.oom_advice import advise, oom_error
    from engine.plan.vram import estimate_vram

    heavy = RunConfig().with_values(gradient_checkpointing=False, cache_latents=False, optimizer_type="AdamW",
                                    network_dim=64, network_alpha=32.0)
    plan = SimpleNamespace(buckets=[SimpleNamespace(bucket=(1024, 1024), batch_size=4)])
    error = oom_error(heavy, plan, device_gb=24.0, step=120, state_saved="lora-step00000120.safetensors")
    assert error.exit_code == 75 and error.step == 120
    assert "CUDA ran out of memory during step 121" in error.message and "the GPU has 24.0 GB" in error.message
    assert "state was saved" in error.message
    assert error.hint.startswith("these settings should fit (estimate ")
    assert "gradient_checkpointing = true" in error.hint
    advice = advise(heavy, plan, 24.0)
    assert advice.fits and advice.fitted_gb <= 24.0 * 0.92 < advice.estimate_gb
    # the advice is the estimate of exactly those settings
    fixed = heavy.with_values(gradient_checkpointing=True, cache_latents=True, optimizer_type="AdamW8bit")
    if len(advice.settings) == 3:
        assert advice.fitted_gb == pytest.approx(estimate_vram(fixed, plan).total)
    small = oom_error(RunConfig(), None, device_gb=4.0)
    assert "too small" in small.hint or "should fit" in small.hint
    print(error, "\n", small)


@pytest.mark.e2e
def test_oom_during_training_saves_state_and_reports_the_advice(tmp_path, tiny_model, demo_dataset, monkeypatch):
    """The real out-of-memory error type, raised from inside the third step's forward pass."""
    import torch

    from engine.outputs import checkpoint
    from engine.train.loop import Trainer

    original = Trainer.batch_loss
    calls = []

    def batch_loss(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "batch_loss", batch_loss)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=10)
    run = train(cfg)
    assert run.result.exit_code == 75
    failed = run.of(Failed)[-1]
    assert "CUDA ran out of memory during step 3" in failed.message and "state was saved" in failed.message
    assert "these lower the memory need" in failed.hint and "gradient_checkpointing = true" in failed.hint
    assert checkpoint.latest_state(Path(cfg.saving.output_dir)).name == "step-00000002"


# ---------------------------------------------------------------- output

@pytest.fixture()
def read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: a read-only mount is the real thing
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    else:
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)


def test_output_dir_not_writable(tmp_path, tiny_model, demo_dataset, read_only_folder, no_model_load):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, output_dir=str(read_only_folder / "run"))
    run = train(cfg)
    assert run.result.exit_code == 73
    failed = run.of(Failed)[-1]
    assert f"cannot write to {read_only_folder / 'run'}" in failed.message
    assert "choose an output_dir you can write to" in failed.hint


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_existing_run_is_never_overwritten(tmp_path, tiny_model, demo_dataset, capsys):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1)
    assert train(cfg).result.ok
    out = Path(cfg.saving.output_dir)
    before = _digest(out)
    code, said = _cli(["train", str(save_config(cfg.with_values(network_dim=8), tmp_path / "again.toml"))], capsys)
    assert code == 73
    assert f"{out} already holds a run" in said and "another output_dir" in said
    # no state saved (save_state off, not stopped): resume cannot help, its LoRA can
    assert "no saved state to resume from" in said and f'network_weights = "{out / "lora.safetensors"}"' in said
    assert _digest(out) == before, "the earlier run's files were touched"
    (out / "state" / "step-00000001").mkdir(parents=True)
    for name in ("lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "rng.json", "progress.json",
                 "COMPLETE"):
        (out / "state" / "step-00000001" / name).write_text("x")
    code, said = _cli(["train", str(tmp_path / "again.toml")], capsys)
    assert code == 73 and f"continue it with `sdxl-tui resume {out}`" in said


@pytest.mark.e2e
def test_a_folder_whose_only_attempt_failed_before_training_is_reused_and_says_so(tmp_path, tiny_model,
                                                                                  demo_dataset):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1)
    out = Path(cfg.saving.output_dir)
    out.mkdir(parents=True)
    (out / "config.toml").write_text(save_config(cfg, tmp_path / "c.toml").read_text())
    (out / "events.jsonl").write_text('{"type": "Failed", "time": 1.0, "message": "model not found: x", '
                                      '"hint": "", "step": 0, "kind": "ModelError", "last_good": ""}\n')
    run = train(cfg)
    assert run.result.ok, run.result.error
    assert any("held only an attempt that failed before training (model not found: x)" in w.message
               for w in run.of(Warning_))
    assert (out / "events.jsonl.failed-attempt").is_file() and run.of(Finished)
