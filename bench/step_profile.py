"""One steady-state LoRA step, taken apart: where the time goes in our step, against the bare
step (the floor) and, optionally, a plain diffusers UNet with peft's LoRA.

Three loops share ONE UNet (built once; the full one is 10.3 GB in fp32) and run interleaved,
round by round, with the same warm-up and timed steps each, so noise from a shared machine
hits them alike:

- **ours**: the engine's real `Trainer.train()` hot loop (engine/train/loop.py: `batch_loss`,
  `accelerator.backward`, `optimizer_step`, `meter.add`, `after_step`, `log` every
  `log_every_n_steps`), the accelerate-prepared optimizer, the engine's LoRA network
  (engine/lora/network.py), with a data source that assembles each batch from cached CPU
  tensors as `TrainingData._batch` does (stack latents, time ids and weights, move them).
  Sections: `data` (the batch iterator), `unet_forward` (forward hooks on the UNet),
  `batch_loss_other` (noise, timesteps, casts and loss around the forward), `backward`,
  `optimizer` (clip + step + zero_grad + LR schedule), `ours_other` (the rest of the loop:
  metering, events, logging, control).
- **bare**: the same UNet, the same LoRA layers and an AdamW over the same parameter groups in
  a minimal PyTorch loop: no accelerate, no events, no data loader, inputs already on the
  device (`torch.autocast` only where the precision needs it, clip_grad_norm_ as ours does).
- **peft** (`--peft`, run last): our network removed, peft's LoRA on the same Linear layers
  through diffusers' `unet.add_adapter` (what diffusers' train_text_to_image_lora_sdxl does),
  the same bare loop.

The ratio ours / bare is the cost of our own per-step code; bare / peft compares our LoRA
forward with peft's. `--profile` adds a torch.profiler table (top operators by self CPU time)
of a few steps of each loop. GC pauses inside the timed steps are counted (gc.callbacks); our
loop freezes the objects alive at its start out of the GC (Trainer.train), the bare loop does not.

Run from the repository root with PYTHONPATH=. (the engine under test is the one on the path):

    PYTHONPATH=. .venv/bin/python bench/step_profile.py --json bench/results/step_profile_tiny.json
    PYTHONPATH=. .venv/bin/python bench/step_profile.py \
        --case model=sdxl,resolution=128,precision=fp32,checkpointing=false \
        --steps 3 --warmup 1 --rounds 2 --json bench/results/step_profile_sdxl.json
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import Case, _build_unet, _trainer, parse_case

SECTIONS = ("data", "unet_forward", "batch_loss_other", "backward", "optimizer", "ours_other", "after_step")


class Clock:
    """Wall-clock sections of the current step; `sync` (CUDA) makes each section's end real."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.current: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []

    def add(self, name: str, seconds: float) -> None:
        self.current[name] = self.current.get(name, 0.0) + seconds

    @contextmanager
    def section(self, name: str):
        self.sync()
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.add(name, time.perf_counter() - begun)

    def timed(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            with self.section(name):
                return fn(*args, **kwargs)
        return wrapper


class GcPauses:
    """Seconds spent in Python's cyclic GC while `active` (all generations), also added to the
    running loop's clock as the `gc_pause` section of the current step (so the explicit
    gc.collect() at the start of Trainer.train lands in one step, outside the medians)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.active = False
        self.clock: Clock | None = None
        self._begun = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if not self.active:
            return
        if phase == "start":
            self._begun = time.perf_counter()
        else:
            spent = time.perf_counter() - self._begun
            self.seconds += spent
            self.collections += 1
            if self.clock is not None:
                self.clock.add("gc_pause", spent)


class CachedData:
    """A `TrainingData` stand-in for the loop: each batch is assembled from cached CPU tensors
    (latents and text outputs stacked, time ids and loss weights built, all moved to the
    device), the work `TrainingData._batch` does for cached latents and text outputs."""

    def __init__(self, case: Case, unet, device, images: int = 8) -> None:
        import torch

        side = case.resolution // 8
        pooled_width = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        generator = torch.Generator().manual_seed(1)
        self.latents = [torch.randn(4, side, side, generator=generator) for _ in range(images)]
        self.hidden = [torch.randn(77, unet.config.cross_attention_dim, generator=generator) for _ in range(images)]
        self.pooled = [torch.randn(pooled_width, generator=generator) for _ in range(images)]
        self.case, self.device, self.images = case, device, images
        self.batches_per_epoch = 10**6

    def epoch_batches(self, epoch: int, skip: int = 0):
        import torch

        from engine.data.training_data import Batch

        size = float(self.case.resolution)
        for position in range(skip, self.batches_per_epoch):
            picks = [(position * self.case.batch + slot) % self.images for slot in range(self.case.batch)]
            yield Batch(latents=torch.stack([self.latents[i] for i in picks]).to(self.device),
                        pixels=None, captions=[""] * len(picks),
                        text_hidden=torch.stack([self.hidden[i] for i in picks]).to(self.device),
                        text_pooled=torch.stack([self.pooled[i] for i in picks]).to(self.device),
                        time_ids=torch.tensor([[size, size, 0.0, 0.0, size, size]] * len(picks)).to(self.device),
                        loss_weights=torch.ones(len(picks)).to(self.device), paths=[f"image{i}.png" for i in picks])


def timed_batches(data: CachedData, clock: Clock):
    """`data` whose iterator's `next` counts as the `data` section."""
    class Timed:
        batches_per_epoch = data.batches_per_epoch

        @staticmethod
        def epoch_batches(epoch: int, skip: int = 0):
            source = data.epoch_batches(epoch, skip)
            while True:
                with clock.section("data"):
                    batch = next(source, None)
                if batch is None:
                    return
                yield batch
    return Timed()


class Ours:
    """The engine's Trainer over `data`, instrumented; `run(n)` takes n optimizer steps."""

    def __init__(self, case: Case, unet, network, accelerator, data: CachedData, clock: Clock, cfg_values: dict):
        from engine.train.ddp import training_unet

        self.clock = clock
        trainer, self.fused = _trainer(case, unet, network, accelerator)
        trainer.cfg = trainer.cfg.with_values(**cfg_values) if cfg_values else trainer.cfg
        trainer.unet = training_unet(accelerator, unet, network, compile_unet=case.compile)
        trainer.data = timed_batches(data, clock)
        self.events: list = []
        trainer.emit = self.events.append
        batch_loss, optimizer_step = trainer.batch_loss, trainer.optimizer_step
        trainer.batch_loss = clock.timed("batch_loss", batch_loss)
        trainer.optimizer_step = clock.timed("optimizer", optimizer_step)
        accelerator.backward = clock.timed("backward", accelerator.backward)
        self.trainer = trainer
        # Each optimizer step closes a step record: the loop's own code runs between them.
        after_step = trainer.after_step

        def closing_after_step():
            with clock.section("after_step"):
                after_step()
            clock.steps.append(self._close())
        trainer.after_step = closing_after_step
        self._step_started = time.perf_counter()

    def _close(self) -> dict[str, float]:
        now = time.perf_counter()
        record = dict(self.clock.current)
        record["total"] = now - self._step_started
        self._step_started = now
        self.clock.current = {}
        return record

    def run(self, steps: int) -> None:
        trainer = self.trainer
        trainer.total_steps = trainer.position.global_step + steps
        self.clock.current = {}
        self._step_started = time.perf_counter()
        trainer.train()


def bare_step_fn(case: Case, unet, params_groups, device, clock: Clock | None, noise_scheduler):
    """The floor: forward, MSE loss, backward, clip, AdamW step, in plain PyTorch."""
    import torch

    from engine.train.optimizers import build_optimizer

    optimizer = build_optimizer(case.optimizer, params_groups, {})
    params = [p for g in params_groups for p in g["params"]]
    generator = torch.Generator().manual_seed(2)
    side = case.resolution // 8
    latents = torch.randn(case.batch, 4, side, side, generator=generator).to(device)
    pooled_width = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    hidden = torch.randn(case.batch, 77, unet.config.cross_attention_dim, generator=generator).to(device)
    pooled = torch.randn(case.batch, pooled_width, generator=generator).to(device)
    size = float(case.resolution)
    time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]] * case.batch, device=device)
    dtype = next(p.dtype for p in unet.parameters() if p.is_floating_point())
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(case.precision)
    alphas = noise_scheduler.alphas_cumprod.to(device)
    clip = 0.0 if case.fused else 1.0
    section = clock.section if clock is not None else (lambda name: _null())

    def step():
        with section("batch_loss_other"):
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, 1000, (case.batch,), device=device)
            a = alphas[timesteps].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            prediction = unet(noisy.to(dtype), timesteps, encoder_hidden_states=hidden.to(dtype),
                              added_cond_kwargs={"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}
                              ).sample
        with section("batch_loss_other"):
            loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        with section("backward"):
            loss.backward()
        with section("optimizer"):
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss
    return step


@contextmanager
def _null():
    yield


def run_bare(step: Callable, clock: Clock, steps: int) -> None:
    for _ in range(steps):
        clock.current = {}
        begun = time.perf_counter()
        step()
        record = dict(clock.current)
        record["total"] = time.perf_counter() - begun
        clock.steps.append(record)


def forward_hooks(unet, clock: Clock):
    """UNet forward time into `unet_forward` (hooks on the UNet itself: DDP/compile wrappers outside)."""
    state = {}

    def before(module, args, kwargs):
        clock.sync()
        state["begun"] = time.perf_counter()

    def after(module, args, kwargs, output):
        clock.sync()
        clock.add("unet_forward", time.perf_counter() - state["begun"])

    return [unet.register_forward_pre_hook(before, with_kwargs=True),
            unet.register_forward_hook(after, with_kwargs=True)]


def summarize(records: list[dict[str, float]], kind: str) -> dict:
    """Median of each section over the timed steps, and the rest of the step as `*_other`."""
    out: dict[str, float] = {}
    keys = sorted({k for r in records for k in r})
    for key in keys:
        out[key] = statistics.median(r.get(key, 0.0) for r in records)
    if kind == "ours":
        out["batch_loss_other"] = statistics.median(r.get("batch_loss", 0.0) - r.get("unet_forward", 0.0)
                                                    for r in records)
        out["ours_other"] = statistics.median(
            r["total"] - sum(r.get(k, 0.0) for k in ("data", "batch_loss", "backward", "optimizer")) for r in records)
        # after_step is part of ours_other (events, logging, control); also shown alone
        out.pop("batch_loss", None)
    return {k: round(v, 5) for k, v in out.items()}


def top_operators(fn: Callable, rows: int = 25) -> str:
    """torch.profiler table of `fn()` (a few steps), by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    import torch
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def add_peft(unet, network, rank: int):
    """Our adapters out; peft's LoRA (diffusers' `add_adapter`) on the Linear layers inside the
    Transformer2DModel blocks, as diffusers' SDXL LoRA example targets (plus proj_in/out and the
    feed-forward, which sd-scripts also wraps)."""
    from peft import LoraConfig

    network.remove()
    targets = [name for name, _ in _transformer_linears(unet)]  # full names: exactly our layers
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))
    return [p for p in unet.parameters() if p.requires_grad]


def _transformer_linears(unet):
    import torch

    for name, container in unet.named_modules():
        if type(container).__name__ == "Transformer2DModel":
            for child_name, child in container.named_modules():
                if isinstance(child, torch.nn.Linear):
                    yield f"{name}.{child_name}", child


def run(case: Case, rounds: int, profile: bool, peft: bool, cfg_values: dict) -> dict:
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from engine.lora.network import create_network
    from engine.model.load import make_noise_scheduler
    from engine.model.sdxl_configs import SCHEDULER_CONFIG

    if case.threads:
        torch.set_num_threads(case.threads)
    on_gpu = torch.cuda.is_available() if case.device == "auto" else case.device.startswith("cuda")
    device = torch.device("cuda" if on_gpu else "cpu")
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[case.precision],
                              cpu=not on_gpu)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[case.precision]
    started = time.perf_counter()
    unet = _build_unet(case, dtype, device)
    unet.requires_grad_(False)
    network_started = time.perf_counter()
    network = create_network(unet, None, None, dim=case.rank, alpha=case.rank, train_unet_only=True)
    network.to(device, torch.float32)
    network.apply()
    network_seconds = time.perf_counter() - network_started
    network.train()
    if case.checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    setup_seconds = time.perf_counter() - started
    # Our Trainer.train freezes the objects alive at its start out of the GC (engine/train/loop.py);
    # the bare loop does not: GC pauses are counted for each.
    pauses = GcPauses()
    gc.callbacks.append(pauses)

    clocks = {"ours": Clock(sync), "bare": Clock(sync)}
    data = CachedData(case, unet, device)
    ours = Ours(case, unet, network, accelerator, data, clocks["ours"], cfg_values)
    groups = network.param_groups(1e-4, 1e-4, 1e-4)
    bare = bare_step_fn(case, unet, groups, device, clocks["bare"], make_noise_scheduler(SCHEDULER_CONFIG))
    hooks = forward_hooks(unet, clocks["ours"])
    bare_hooks_clock = clocks["bare"]

    def switch(to: Clock):  # the forward hooks report into the running loop's clock
        for hook in hooks:
            hook.remove()
        hooks[:] = forward_hooks(unet, to)

    timed: dict[str, list[dict]] = {"ours": [], "bare": []}
    gc_by_loop = {"ours": [0.0, 0], "bare": [0.0, 0]}
    for _ in range(rounds):
        for kind in ("ours", "bare"):
            clock = clocks[kind]
            switch(clock)
            clock.steps = []
            loop = ours.run if kind == "ours" else functools.partial(run_bare, bare, clock)
            loop(case.warmup)
            clock.steps = []
            pauses.active, pauses.seconds, pauses.collections, pauses.clock = True, 0.0, 0, clock
            loop(case.steps)
            pauses.active = False
            gc_by_loop[kind][0] += pauses.seconds
            gc_by_loop[kind][1] += pauses.collections
            timed[kind] += clock.steps
    del bare_hooks_clock
    result = {"case": case.__dict__, "label": case.label, "device": str(device), "threads": torch.get_num_threads(),
              "rounds": rounds, "cfg_values": cfg_values,
              "setup_s": round(setup_seconds, 2), "network_create_s": round(network_seconds, 3),
              "lora_parameters": sum(p.numel() for p in network.parameters()),
              "lora_modules": sum(1 for _ in network.lora_modules())}
    for kind in ("ours", "bare"):
        result[kind] = summarize(timed[kind], kind)
        result[kind]["step_times_s"] = [round(r["total"], 4) for r in timed[kind]]
        result[kind]["gc_pause_s_total"] = round(gc_by_loop[kind][0], 4)
        result[kind]["gc_collections"] = gc_by_loop[kind][1]
    result["ours_over_bare"] = round(result["ours"]["total"] / result["bare"]["total"], 4)
    if profile:
        switch(Clock(sync))
        result["profile_ours"] = top_operators(lambda: ours.run(case.steps))
        result["profile_bare"] = top_operators(lambda: run_bare(bare, Clock(sync), case.steps))
    if peft:
        for hook in hooks:
            hook.remove()
        peft_params = add_peft(unet, network, case.rank)
        peft_clock = Clock(sync)
        hooks[:] = forward_hooks(unet, peft_clock)
        peft_groups = [{"params": peft_params, "lr": 1e-4}]
        peft_step = bare_step_fn(case, unet, peft_groups, device, peft_clock, make_noise_scheduler(SCHEDULER_CONFIG))
        records = []
        for _ in range(rounds):
            run_bare(peft_step, peft_clock, case.warmup)
            peft_clock.steps = []
            run_bare(peft_step, peft_clock, case.steps)
            records += peft_clock.steps
        result["peft"] = summarize(records, "bare")
        result["peft"]["step_times_s"] = [round(r["total"], 4) for r in records]
        result["peft"]["lora_parameters"] = sum(p.numel() for p in peft_params)
        result["bare_over_peft"] = round(result["bare"]["total"] / result["peft"]["total"], 4)
        if profile:
            result["profile_peft"] = top_operators(lambda: run_bare(peft_step, Clock(sync), case.steps))
    import resource

    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def table(result: dict) -> str:
    kinds = [k for k in ("ours", "bare", "peft") if k in result]
    rows = [("section (median s)",) + tuple(kinds)]
    for name in SECTIONS + ("gc_pause", "total"):
        rows.append((name,) + tuple(f"{result[k][name]:.4f}" if name in result[k] else "-" for k in kinds))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines.append(f"ours / bare = {result['ours_over_bare']:.3f}"
                 + (f"; bare / peft = {result['bare_over_peft']:.3f}" if "bare_over_peft" in result else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case",
                        default="model=tiny,precision=fp32,checkpointing=false,resolution=64,rank=4,threads=1",
                        help="train_step.py's key=value case (model=sdxl for the full UNet)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop per round")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps per loop per round")
    parser.add_argument("--rounds", type=int, default=3, help="ours/bare rounds, interleaved")
    parser.add_argument("--profile", action="store_true", help="add torch.profiler operator tables")
    parser.add_argument("--peft", action="store_true", help="also time peft's LoRA on the plain diffusers UNet")
    parser.add_argument("--cfg", default="", help="RunConfig values for our loop, key=value,... (ints)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    import dataclasses

    case = dataclasses.replace(parse_case(args.case), steps=args.steps, warmup=args.warmup)
    cfg_values = {k: int(v) for k, _, v in (item.partition("=") for item in filter(None, args.cfg.split(",")))}
    result = run(case, args.rounds, args.profile, args.peft, cfg_values)
    from bench_env import environment

    result["environment"] = environment()
    with open("/proc/loadavg") as handle:
        result["loadavg_end"] = handle.read().strip()
    print(f"{case.label}  (load {result['environment'].get('load_average')})")
    print(table(result))
    for key in ("profile_ours", "profile_bare", "profile_peft"):
        if key in result:
            print(f"\n{key}\n{result[key]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
