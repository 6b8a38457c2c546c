"""Steady-state LoRA training step: s/step, images/s, peak memory (and MFU on a GPU).

Each case runs in its own child process (so peak memory is that case's own) and drives the
engine's real hot loop: `engine.train.loop.Trainer.batch_loss` + `accelerator.backward` +
`Trainer.optimizer_step` (fused backward through `engine.train.fused_backward`), on a UNet with the
engine's LoRA network (`engine.lora.network.create_network`, UNet only), with cached latents and
text-encoder outputs (random tensors of the right shapes: the cache is what the step reads).

Models: "tiny" (engine/demo/tiny_model.py) and "sdxl" (SDXL base's published UNet config from
engine/model/sdxl_configs.py, random weights, nothing downloaded; 2.567 B parameters: ~5.1 GB in
bf16, ~10.3 GB in fp32).

    .venv/bin/python bench/train_step.py                 # CPU matrix (tiny + full UNet at 128²)
    .venv/bin/python bench/train_step.py --only tiny --json bench/results/cpu_tiny.json
    .venv/bin/python bench/train_step.py --case model=sdxl,resolution=1024,precision=bf16,rank=16
    .venv/bin/python bench/train_step.py --gpu-matrix    # the GPU figures (see bench/gpu_check.py)

MFU (GPU only): SDXL UNet forward ≈ 6.76 TFLOP per 1024² image (1.59 at 512²; other sizes
scaled by pixel count from 1024²), a LoRA step ≈ 2.1 × forward, ≈ 3.1 × with gradient
checkpointing, over the card's dense bf16 peak (--peak-tflops to override the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
FORWARD_TFLOP_1024 = 6.76
FORWARD_TFLOP_512 = 1.59
STEP_FACTOR = {False: 2.1, True: 3.1}  # by gradient checkpointing
# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment, most specific first.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("4090", 165.0), ("A6000", 155.0), ("3090", 71.0))


@dataclass(frozen=True)
class Case:
    model: str = "tiny"  # "tiny" or "sdxl"
    precision: str = "bf16"  # "bf16" or "fp32" (fp16 only on a GPU)
    checkpointing: bool = True
    rank: int = 32
    batch: int = 1
    resolution: int = 256
    fused: bool = False
    compile: bool = False
    channels_last: bool = False
    optimizer: str = "AdamW"
    steps: int = 5
    warmup: int = 2
    threads: int = 0  # 0: torch's default
    device: str = "auto"
    fp8_base: bool = False  # frozen Linear/Conv weights stored float8_e4m3fn (engine/train/precision.py)

    @property
    def label(self) -> str:
        parts = [self.model, f"{self.resolution}²", self.precision, "ckpt" if self.checkpointing else "no-ckpt",
                 f"r{self.rank}", f"b{self.batch}"]
        parts += [name for name, on in (("fused", self.fused), ("compile", self.compile),
                                        ("channels-last", self.channels_last), ("fp8-base", self.fp8_base)) if on]
        if self.optimizer != "AdamW":
            parts.append(self.optimizer)
        return " ".join(parts)


# ---------------------------------------------------------------- one case (child process)

def _build_unet(case: Case, dtype, device):
    import torch
    from diffusers import UNet2DConditionModel

    if case.model == "tiny":
        from engine.demo.tiny_model import unet_config

        torch.manual_seed(0)
        return UNet2DConditionModel(**unet_config()).to(device, dtype)
    from engine.model.sdxl_configs import SDXL_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    unet = unet.to(dtype)
    # Random weights scaled by fan-in keep activations finite; values do not change the timing.
    # Materialised one layer at a time, so with fp8_base the bf16 UNet never exists whole.
    from engine.train.precision import store_weights_fp8

    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        # a list: store_weights_fp8 adds parametrization submodules whose float8 `original` must not be visited
        for module_name, module in list(unet.named_modules()):
            module.to_empty(device=device, recurse=False)
            for name, param in module.named_parameters(recurse=False):
                if param.dim() >= 2:
                    fan_in = param[0].numel()
                    param.normal_(0.0, fan_in ** -0.5, generator=generator)
                elif "norm" in module_name and name == "weight":
                    param.fill_(1.0)
                else:
                    param.zero_()
            for buffer in module.buffers(recurse=False):
                buffer.zero_()
            if case.fp8_base and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                store_weights_fp8(module, dtype)
    return unet


def _inputs(case: Case, unet, device):
    import torch

    from engine.data.training_data import Batch

    side = case.resolution // 8
    pooled_width = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    generator = torch.Generator(device="cpu").manual_seed(1)
    latents = torch.randn(case.batch, 4, side, side, generator=generator).to(device)
    hidden = torch.randn(case.batch, 77, unet.config.cross_attention_dim, generator=generator).to(device)
    pooled = torch.randn(case.batch, pooled_width, generator=generator).to(device)
    size = float(case.resolution)
    time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]] * case.batch, device=device)
    return Batch(latents=latents, pixels=None, captions=[""] * case.batch, text_hidden=hidden,
                 text_pooled=pooled, time_ids=time_ids, loss_weights=None, paths=[])


def _trainer(case: Case, unet, network, accelerator):
    """The engine's Trainer with what batch_loss / optimizer_step read (nothing else runs)."""
    from types import SimpleNamespace

    import torch

    from engine.config.schema import RunConfig
    from engine.model.load import make_noise_scheduler
    from engine.model.sdxl_configs import SCHEDULER_CONFIG
    from engine.train.fused_backward import FusedBackward
    from engine.train.loop import Trainer
    from engine.train.optimizers import build_optimizer

    cfg = RunConfig().with_values(mixed_precision="no" if case.precision == "fp32" else case.precision,
                                  max_grad_norm=0.0 if case.fused else 1.0)
    groups = network.param_groups(1e-4, 1e-4, 1e-4)
    optimizer = build_optimizer(case.optimizer, groups, {})
    fused = FusedBackward(optimizer) if case.fused else None
    if fused is None:
        optimizer = accelerator.prepare(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model = SimpleNamespace(unet=unet, vae=None, noise_scheduler=make_noise_scheduler(SCHEDULER_CONFIG))
    params = [p for g in groups for p in g["params"]]
    return Trainer(cfg=cfg, model=model, network=network, optimizer=optimizer, scheduler=scheduler, fused=fused,
                   accelerator=accelerator, data=None, emit=lambda e: None, control=None, output_dir=Path("."),
                   total_steps=10**9, total_epochs=1, trainable_params=params, train_text_encoders=False,
                   outputs=None, images_per_step=case.batch), fused


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss_bytes() -> int:
    from engine.train.memory import process_rss

    return process_rss() or 0


def run_case(case: Case) -> dict:
    import torch

    if case.threads:
        torch.set_num_threads(case.threads)
    on_gpu = torch.cuda.is_available() if case.device == "auto" else case.device.startswith("cuda")
    device = torch.device("cuda" if on_gpu else "cpu")
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from engine.lora.network import create_network
    from engine.train.ddp import training_unet

    AcceleratorState._reset_state(reset_partial_state=False)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[case.precision]
    accelerator = Accelerator(mixed_precision=mixed, cpu=not on_gpu)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case.precision]
    started = time.perf_counter()
    unet = _build_unet(case, dtype, device)
    unet.requires_grad_(False)
    if case.channels_last:
        unet.to(memory_format=torch.channels_last)
    network = create_network(unet, None, None, dim=case.rank, alpha=case.rank, train_unet_only=True)
    network.to(device, torch.float32)
    network.apply()
    network.train()
    if case.checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    trainer, fused = _trainer(case, unet, network, accelerator)
    trainer.unet = training_unet(accelerator, unet, network, compile_unet=case.compile)
    batch = _inputs(case, unet, device)
    setup_seconds = time.perf_counter() - started
    rss_before = _current_rss_bytes()

    def step():
        loss = trainer.batch_loss(batch)
        accelerator.backward(loss)
        trainer.optimizer_step()
        return loss

    warm_started = time.perf_counter()
    for _ in range(case.warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_seconds = time.perf_counter() - warm_started
    times, losses = [], []
    for _ in range(case.steps):
        begun = time.perf_counter()
        losses.append(step().detach())
        if on_gpu:
            torch.cuda.synchronize()  # measurement only: the engine's loop does not sync per step
        times.append(time.perf_counter() - begun)
    if fused is not None:
        fused.remove()
    seconds = statistics.median(times)
    result = {
        "case": dataclasses.asdict(case), "label": case.label, "device": _device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "lora_parameters": sum(p.numel() for p in network.parameters()),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "unet_weight_bytes": sum(p.numel() * p.element_size() for p in unet.parameters()),
        "setup_s": round(setup_seconds, 2), "warmup_s": round(warmup_seconds, 2),
        "step_times_s": [round(t, 4) for t in times], "s_per_step": seconds,
        "images_per_s": case.batch / seconds, "loss_finite": bool(torch.isfinite(torch.stack(losses)).all()),
        "rss_before_steps_bytes": rss_before, "peak_rss_bytes": _peak_rss_bytes(),
    }
    if on_gpu:
        result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result.update(_mfu(case, seconds, torch.cuda.get_device_name(device)))
    return result


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


def step_tflop(case: Case) -> Optional[float]:
    """TFLOP per image of one LoRA training step on the full SDXL UNet (None for the tiny one)."""
    if case.model != "sdxl":
        return None
    if case.resolution == 512:
        forward = FORWARD_TFLOP_512
    else:
        forward = FORWARD_TFLOP_1024 * (case.resolution / 1024) ** 2
    return forward * STEP_FACTOR[case.checkpointing]


def peak_tflops(device_name: str) -> Optional[float]:
    override = os.environ.get("BENCH_PEAK_TFLOPS")
    if override:
        return float(override)
    for fragment, value in PEAK_BF16_TFLOPS:
        if fragment.lower() in device_name.lower():
            return value
    return None


def _mfu(case: Case, seconds: float, device_name: str) -> dict:
    per_image = step_tflop(case)
    peak = peak_tflops(device_name)
    if per_image is None:
        return {}
    achieved = per_image * case.batch / seconds
    out = {"achieved_tflops": achieved, "peak_tflops": peak}
    if peak:
        out["mfu"] = achieved / peak
    return out


# ---------------------------------------------------------------- the matrix (parent process)

def cpu_matrix(only: str = "") -> list[Case]:
    """The CPU figures: one setting changed at a time around two bases, bf16 and fp32."""
    tiny: list[Case] = []
    for precision in ("bf16", "fp32"):
        base = Case(model="tiny", precision=precision, resolution=256, threads=1, steps=7, warmup=2)
        tiny += [base, dataclasses.replace(base, checkpointing=False), dataclasses.replace(base, rank=4),
                 dataclasses.replace(base, batch=4), dataclasses.replace(base, fused=True)]
    base = Case(model="tiny", precision="bf16", resolution=256, threads=1, steps=7, warmup=2)
    tiny += [dataclasses.replace(base, checkpointing=False, batch=4),
             dataclasses.replace(base, channels_last=True), dataclasses.replace(base, channels_last=True, batch=4)]
    # torch.compile is left out: on a 2-core CPU compiling the tiny UNet takes ~9 minutes
    # (measure it alone: --case model=tiny,compile=true,checkpointing=false,warmup=2).
    full = Case(model="sdxl", precision="bf16", resolution=128, steps=3, warmup=1)
    sdxl = [full, dataclasses.replace(full, checkpointing=False), dataclasses.replace(full, rank=4),
            dataclasses.replace(full, fused=True), dataclasses.replace(full, precision="fp32")]
    return {"tiny": tiny, "sdxl": sdxl}.get(only, tiny + sdxl)


def gpu_matrix() -> list[Case]:
    """The issue-8 GPU figures at 1024²: the memory-floor case first (bf16, checkpointing, rank 16)."""
    base = Case(model="sdxl", precision="bf16", resolution=1024, rank=16, batch=1, checkpointing=True,
                steps=6, warmup=3, device="cuda")
    return [base, dataclasses.replace(base, batch=4), dataclasses.replace(base, fused=True),
            dataclasses.replace(base, checkpointing=False), dataclasses.replace(base, rank=32),
            dataclasses.replace(base, batch=4, fused=True)]


def memory_needed_bytes(case: Case) -> int:
    """A rough floor for running `case` on the CPU: UNet weights plus working room."""
    if case.model == "tiny":
        return 1 << 30
    weights = 2_567_000_000 * (2 if case.precision != "fp32" else 4)
    return int(weights * 1.6)


def available_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return 1 << 62


def run_in_child(case: Case, timeout: float) -> dict:
    if case.device != "cuda" and memory_needed_bytes(case) > available_memory_bytes():
        return {"case": dataclasses.asdict(case), "label": case.label,
                "skipped": f"needs ~{memory_needed_bytes(case) / 2**30:.1f} GiB, "
                           f"{available_memory_bytes() / 2**30:.1f} GiB available"}
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(dataclasses.asdict(case))]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"case": dataclasses.asdict(case), "label": case.label, "skipped": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"case": dataclasses.asdict(case), "label": case.label,
            "skipped": f"failed (exit {done.returncode}): {' | '.join(tail)}"}


def median_run(found: list[dict]) -> dict:
    """The run with the median s/step (a shared machine's noise only ever adds time), with
    every run's s/step kept beside it."""
    done = sorted((r for r in found if "skipped" not in r), key=lambda r: r["s_per_step"])
    if not done:
        return found[-1]
    chosen = dict(done[(len(done) - 1) // 2])
    chosen["runs_s_per_step"] = [round(r["s_per_step"], 4) for r in done]
    return chosen


def _gib(value: Optional[int]) -> str:
    return f"{value / 2**30:.2f}" if value else "-"


def table(results: list[dict]) -> str:
    rows = [("case", "s/step", "img/s", "peak RSS GiB", "CUDA alloc/resv GiB", "MFU", "note")]
    for r in results:
        if "skipped" in r:
            rows.append((r["label"], "-", "-", "-", "-", "-", r["skipped"]))
            continue
        cuda = "-"
        if "cuda_peak_allocated_bytes" in r:
            cuda = f"{_gib(r['cuda_peak_allocated_bytes'])}/{_gib(r['cuda_peak_reserved_bytes'])}"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        spread = f"{min(r['step_times_s']):.3g}-{max(r['step_times_s']):.3g} s"
        note = f"steps {spread}"
        if len(r.get("runs_s_per_step", [])) > 1:
            note += f"; runs {', '.join(f'{x:.3g}' for x in r['runs_s_per_step'])}"
        note += "" if r["loss_finite"] else "; loss not finite"
        rows.append((r["label"], f"{r['s_per_step']:.3f}", f"{r['images_per_s']:.2f}", _gib(r["peak_rss_bytes"]),
                     cuda, mfu, note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_case(text: str) -> Case:
    """`key=value,key=value` over Case's fields (bools: true/false/1/0)."""
    values: dict[str, Any] = {}
    types = {f.name: f.type for f in dataclasses.fields(Case)}
    for item in filter(None, text.split(",")):
        key, _, raw = item.partition("=")
        kind = types[key.strip()]
        if kind in ("bool", bool):
            values[key.strip()] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif kind in ("int", int):
            values[key.strip()] = int(raw)
        else:
            values[key.strip()] = raw.strip()
    return Case(**values)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("tiny", "sdxl"), help="only the tiny model or only the full UNet")
    parser.add_argument("--case", action="append", default=[], help="run this case (key=value,...) instead")
    parser.add_argument("--gpu-matrix", action="store_true", help="the 1024² full-UNet GPU cases")
    parser.add_argument("--steps", type=int, help="timed steps per case (overrides the matrix)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the whole list this many times, interleaved; report the median run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per case before it is skipped")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(Case(**json.loads(args.one)))), flush=True)
        return 0
    matrix = gpu_matrix() if args.gpu_matrix else cpu_matrix(args.only or "")
    cases = [parse_case(text) for text in args.case] or matrix
    if args.steps:
        cases = [dataclasses.replace(c, steps=args.steps) for c in cases]
    runs: dict[str, list[dict]] = {case.label: [] for case in cases}
    for attempt in range(args.repeats):
        for case in cases:
            result = run_in_child(case, args.timeout)
            runs[case.label].append(result)
            shown = result.get("skipped") or (f"{result['s_per_step']:.3f} s/step, "
                                              f"peak RSS {_gib(result['peak_rss_bytes'])} GiB")
            print(f"[{attempt + 1}/{args.repeats}] {case.label}: {shown}", file=sys.stderr, flush=True)
    results = [median_run(found) for found in runs.values()]
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        from bench_env import environment  # bench/ is sys.path[0] when this file runs as a script

        Path(args.json).write_text(json.dumps({"environment": environment(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
