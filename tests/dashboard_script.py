"""A scripted run for dashboard and console-view tests: plausible figures, fixed clock."""
from __future__ import annotations

import math
from pathlib import Path

from engine.events import types as ev

T0 = 1_750_000_000.0  # any fixed wall-clock time
OUTPUT_DIR = "runs/scripted_run"  # relative: tests chdir into a tmp dir first
SAMPLE_PATH = f"{OUTPUT_DIR}/samples/lora_000200_00.png"
GB = 10 ** 9  # the dashboard shows decimal GB (engine.units)


def make_sample_png(path: Path = Path(SAMPLE_PATH)) -> Path:
    """A small deterministic picture (gradient sky, a sun, green ground)."""
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (64, 64))
    draw = ImageDraw.Draw(image)
    for y in range(64):
        draw.line([(0, y), (63, y)], fill=(40 + y, 90 + y, 200 - y))
    draw.rectangle([0, 44, 63, 63], fill=(40, 140, 60))
    draw.ellipse([38, 8, 54, 24], fill=(250, 210, 60))
    image.save(path)
    return path


def loss_at(step: int) -> tuple[float, float]:
    raw = 0.08 + 0.1 * math.exp(-step / 60) + 0.03 * math.sin(step * 1.7) ** 2
    smooth = 0.08 + 0.1 * math.exp(-step / 60) + 0.015
    return raw, smooth


def step_event(step: int, total: int = 400) -> ev.Step:
    raw, smooth = loss_at(step)
    allocated = int((9.2 + 0.4 * math.sin(step / 9)) * GB)
    return ev.Step(
        time=T0 + 20 + step * 1.25, step=step, total_steps=total, epoch=1 + (step - 1) // 100,
        loss=raw, smoothed_loss=smooth, lr={"unet": 1e-4, "text_encoder1": 5e-5},
        seconds_per_step=1.25, images_per_second=3.2, eta_seconds=(total - step) * 1.25,
        memory=ev.Memory(device="cuda:0", allocated=allocated, reserved=12 * GB,
                         peak=int(10.6 * GB), total=24 * GB),
    )


def preamble() -> list[ev.Event]:
    return [
        ev.RunStarted(time=T0, output_dir=OUTPUT_DIR, total_steps=400, total_epochs=4,
                      steps_per_epoch=100, batch_size=4, config_path=f"{OUTPUT_DIR}/config.toml"),
        ev.Phase(time=T0 + 1, name=ev.LOADING_MODEL, detail="sd_xl_base_1.0.safetensors"),
        ev.Log(time=T0 + 6, message="model loaded: UNet 2.6 G params, LoRA 23.2 M trainable"),
        ev.Phase(time=T0 + 7, name=ev.CACHING_LATENTS, total=100),
        *[ev.PhaseProgress(time=T0 + 7 + i * 0.1, name=ev.CACHING_LATENTS, done=i, total=100) for i in range(1, 101)],
        ev.Phase(time=T0 + 19, name=ev.TRAINING, total=400),
    ]


def caching() -> list[ev.Event]:
    """Still preparing: caching latents 46 of 100."""
    return preamble()[:50]


def early() -> list[ev.Event]:
    return [*preamble(), *[step_event(s) for s in range(1, 13)]]


def mid_run() -> list[ev.Event]:
    out = [*preamble()]
    for s in range(1, 201):
        out.append(step_event(s))
        if s == 100:
            out.append(ev.Saved(time=out[-1].time + 0.5, path=f"{OUTPUT_DIR}/lora-000001.safetensors", step=100,
                                epoch=1))
        if s == 150:
            out.append(ev.Warning_(time=out[-1].time, message="bucket 1216x832 has 1 image: it repeats every step"))
        if s == 200:
            out.append(ev.Phase(time=out[-1].time + 0.1, name=ev.SAMPLING, total=1))
            out.append(ev.Sample(time=out[-1].time + 6, path=SAMPLE_PATH, prompt="a photo of sks dog on a hill, sunny",
                                 step=200))
            out.append(ev.Phase(time=out[-1].time + 0.1, name=ev.TRAINING, total=400))
    return out


def finished() -> list[ev.Event]:
    out = mid_run()
    for s in range(201, 401):
        out.append(step_event(s))
    last = out[-1].time
    out += [
        ev.Phase(time=last + 0.2, name=ev.SAVING),
        ev.Saved(time=last + 1, path=f"{OUTPUT_DIR}/lora.safetensors", step=400, epoch=4),
        ev.Finished(time=last + 1.5, step=400, lora_path=f"{OUTPUT_DIR}/lora.safetensors", seconds=last + 1.5 - T0),
    ]
    return out


def validated() -> list[ev.Event]:
    """The finished run with validation_split images: an epoch validation after every 100 steps."""
    out = []
    for event in finished():
        out.append(event)
        if isinstance(event, ev.Step) and event.step % 100 == 0:
            out.append(ev.Validation(time=event.time + 0.1, step=event.step, epoch=event.step // 100,
                                     loss=0.2 - event.step / 4000, kind="epoch", batches=3, seconds=2.0))
    return out


def failed() -> list[ev.Event]:
    out = mid_run()[:-3]  # before the sample
    for s in range(200, 240):
        out.append(step_event(s))
    out.append(ev.Failed(
        time=out[-1].time + 1, step=239, kind="TrainingDiverged",
        message="loss became NaN at step 239",
        hint="lower the learning rate (unet_lr 1e-4 -> 5e-5) or use mixed_precision = \"bf16\"; "
             "resume from the last save with `sdxl-tui resume`",
        last_good=f"{OUTPUT_DIR}/lora-000001.safetensors",
    ))
    return out


def tiny_run_config(tiny_model, demo_dataset, output_dir: Path, **overrides):
    """The CPU demo preset on the tiny model: a long run (stopped by the tests), a Step per step."""
    from engine.config.toml_file import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "sdxl_tui" / "templates" / "cpu-demo.toml")
    values = dict(pretrained_model_name_or_path=str(tiny_model.diffusers_dir),
                  dataset_config=str(demo_dataset.dataset_toml), sample_prompts=str(demo_dataset.sample_prompts),
                  output_dir=str(output_dir), max_train_steps=1000, log_every_n_steps=1,
                  save_every_n_steps=None, sample_every_n_steps=None, save_state=False)
    values.update(overrides)
    return cfg.with_values(**values)
