"""One training process of tests/test_multi_process.py, started by torchrun (one per rank).

    torchrun --nproc_per_node 2 tests/multi_process_worker.py run.toml RECORD_DIR

It trains through `engine.train.run.run`, exactly as `sdxl-tui train` does, and records for the test
what a single output folder cannot show (rank 0 alone writes files):
- `RECORD_DIR/rank{r}.batches.jsonl`: the image paths of every batch this rank trained on;
- `RECORD_DIR/rank{r}.emitted`: how many events reached this rank's emit callback;
- `RECORD_DIR/rank{r}.lora.safetensors`: this rank's LoRA weights after the run (fp32);
- `RECORD_DIR/rank{r}.result.json`: the RunResult and the DDP-averaged parameter count.

`WORKER_SAVE_NOW_AT=N` / `WORKER_STOP_AT=N` make rank 0 alone (as the dashboard's control
file would) ask for a save / a stop after optimizer step N.
"""
from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path


def main(config_path: str, record_dir: str) -> int:
    import torch

    torch.set_num_threads(1)  # two processes on a small shared CPU

    from engine.config.schema import resolve_relative_paths
    from engine.config.toml_file import load_config
    from engine.control.run_control import RunControl
    from engine.train import loop
    from engine.train.ddp import parameters_requiring_sync
    from engine.train.run import run

    rank = int(os.environ.get("RANK", "0"))
    records = Path(record_dir)
    records.mkdir(parents=True, exist_ok=True)
    batches_file = (records / f"rank{rank}.batches.jsonl").open("w")
    seen: dict = {}

    original_batch_loss = loop.Trainer.batch_loss

    def recording_batch_loss(self, batch):
        seen["trainer"] = self
        batches_file.write(json.dumps(list(batch.paths)) + "\n")
        return original_batch_loss(self, batch)

    loop.Trainer.batch_loss = recording_batch_loss
    control = RunControl()
    save_at, stop_at = int(os.environ.get("WORKER_SAVE_NOW_AT", 0)), int(os.environ.get("WORKER_STOP_AT", 0))
    original_after_step = loop.Trainer.after_step

    def after_step_with_requests(self):
        if rank == 0 and self.position.global_step == save_at:
            control.save_now()
        if rank == 0 and self.position.global_step == stop_at:
            control.request_stop("test")
        return original_after_step(self)

    loop.Trainer.after_step = after_step_with_requests
    emitted = []
    cfg = resolve_relative_paths(load_config(config_path), Path(config_path).parent)
    result = run(cfg, emitted.append, control)
    batches_file.close()
    (records / f"rank{rank}.emitted").write_text(str(len(emitted)))

    trainer = seen.get("trainer")
    if trainer is not None:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() for k, v in trainer.network.kohya_state_dict().items()}
        save_file(state, str(records / f"rank{rank}.lora.safetensors"))
    synced = parameters_requiring_sync(trainer.unet) if trainer is not None and trainer.unet is not None else []
    (records / f"rank{rank}.result.json").write_text(json.dumps({
        "ok": result.ok, "step": result.step, "lora_path": result.lora_path, "stopped": result.stopped,
        "error": repr(result.error) if result.error else "",
        "ddp_wrapped": trainer is not None and trainer.unet is not trainer.model.unet,
        "ddp_synced_parameters": len(synced),
    }))
    return result.exit_code


if __name__ == "__main__":
    code = main(sys.argv[1], sys.argv[2])
    gc.freeze()  # as sdxl_tui.cli.console_main: no final GC pass over torch's objects at exit
    sys.exit(code)
