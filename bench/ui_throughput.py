"""Can the dashboard keep up with an engine emitting 100 steps a second?

Runs the real DashboardScreen headless (120x40), fed by a producer thread that emits Step
events on a fixed schedule through the same message path as a live run. Reports how far
the screen trails the producer, how long one render pass takes, how many events each
render absorbed (coalescing), and the process's CPU use. A second pass emits as fast as
possible to find the ceiling. Figures only; no pass/fail.

    .venv/bin/python bench/ui_throughput.py [--rate 100] [--seconds 10] [--history 50000]
"""
from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.events import types as ev  # noqa: E402
from sdxl_tui.dashboard_app import DashboardApp  # noqa: E402
from sdxl_tui.screens.dashboard import DashboardScreen  # noqa: E402

GIB = 1024 ** 3


def step_event(step: int, total: int) -> ev.Step:
    loss = 0.1 + 0.05 * math.exp(-step / 5000) + 0.02 * math.sin(step * 1.7) ** 2
    return ev.Step(time=time.time(), step=step, total_steps=total, epoch=1 + step // 1000, loss=loss,
                   smoothed_loss=loss * 0.95, lr={"unet": 1e-4, "text_encoder1": 5e-5, "text_encoder2": 5e-5},
                   seconds_per_step=0.01, images_per_second=400.0, eta_seconds=(total - step) * 0.01,
                   memory=ev.Memory(device="cuda:0", allocated=int(9.1 * GIB) + step % 1000 * 1000,
                                    reserved=12 * GIB, peak=int(10.5 * GIB), total=24 * GIB))


class TimedDashboard(DashboardScreen):
    """Records the duration of every render pass and the step it showed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.render_seconds: list[float] = []

    def _render_view(self) -> None:
        start = time.perf_counter()
        super()._render_view()
        self.render_seconds.append(time.perf_counter() - start)


def paced_source(rate: float, seconds: float, first_step: int, total: int, emitted: list[int]):
    """Events at `rate` per second (0: as fast as possible); `emitted[0]` is the newest step."""

    def source(stop: threading.Event):
        start = time.perf_counter()
        if rate < 0:  # idle: the dashboard alone, for a baseline
            stop.wait(seconds)
            return
        count = int(rate * seconds) if rate else 10 ** 9
        for i in range(count):
            if stop.is_set():
                return
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            elif time.perf_counter() - start > seconds:
                return
            step = first_step + i + 1
            emitted[0] = step
            yield step_event(step, total)

    return source


async def measure(rate: float, seconds: float, history: int) -> dict:
    total = history + int(max(rate, 1000) * seconds) * 10
    emitted = [history]
    screen = TimedDashboard(None, None, events_source=paced_source(rate, seconds, history, total, emitted),
                            bell=False, nvml=False, output_dir="bench-run")
    for step in range(1, history + 1):  # a long run's loss history, already on screen
        screen.model.apply(step_event(step, total))
    app = DashboardApp(screen)
    lags: list[int] = []
    folded_lags: list[int] = []
    async with app.run_test(size=(120, 40)) as pilot:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while not screen.source_ended:
            await asyncio.sleep(0.05)
            lags.append(emitted[0] - screen.view.step)
            folded_lags.append(emitted[0] - screen.model.events_seen)
        await pilot.pause()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        final_lag = emitted[0] - screen.view.step
        renders = screen.render_seconds[1:]  # the first is the empty mount render
        events = screen.model.events_seen - history
    lags.sort()
    folded_lags.sort()
    return {
        "events": events, "wall_s": wall, "events_per_s": events / wall, "renders": len(renders),
        "events_per_render": events / max(1, len(renders)),
        "render_ms_mean": 1000 * statistics.fmean(renders) if renders else 0.0,
        "render_ms_p95": 1000 * renders_p(renders, 0.95),
        "lag_steps_p95": renders_p(lags, 0.95), "lag_steps_max": max(lags, default=0), "final_lag": final_lag,
        "folded_lag_p95": renders_p(folded_lags, 0.95), "folded_lag_max": max(folded_lags, default=0),
        "cpu_percent": 100 * cpu / wall, "chart_points": len(screen.view.loss_steps),
    }


def renders_p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else 0.0


def report(title: str, r: dict) -> None:
    print(f"\n{title}")
    print(f"  events folded       {r['events']} in {r['wall_s']:.1f} s = {r['events_per_s']:.0f} steps/s")
    print(f"  render passes       {r['renders']} ({r['events_per_render']:.1f} events each, coalesced)")
    print(f"  render pass         mean {r['render_ms_mean']:.2f} ms, p95 {r['render_ms_p95']:.2f} ms")
    print(f"  folded behind       p95 {r['folded_lag_p95']} steps, max {r['folded_lag_max']} steps")
    print(f"  shown behind        p95 {r['lag_steps_p95']} steps, max {r['lag_steps_max']} steps, "
          f"at the end {r['final_lag']} (redraws are at most 10 a second)")
    print(f"  process CPU         {r['cpu_percent']:.0f}% of one core (producer thread included)")
    print(f"  loss chart points   {r['chart_points']}")


def console_cost(count: int = 20_000) -> dict[str, float]:
    """Microseconds per Step event for the headless views (`sdxl-tui train`)."""
    import io

    from rich.console import Console

    from sdxl_tui.console_view import ConsoleView, PlainView

    events = [step_event(step, count) for step in range(1, count + 1)]
    out = {}
    for name, view in (("plain lines", PlainView(io.StringIO())),
                       ("live panel", ConsoleView(Console(file=io.StringIO(), force_terminal=True, width=100)))):
        start = time.perf_counter()
        for event in events:
            view(event)
        view.close()
        out[name] = 1e6 * (time.perf_counter() - start) / count
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="steps per second the fake engine emits")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--history", type=int, default=50_000, help="steps already in the loss history")
    args = parser.parse_args()
    print(f"dashboard 120x40 headless, {args.history} steps of history, python {sys.version.split()[0]}")
    idle = asyncio.run(measure(-1, min(args.seconds, 5.0), args.history))
    print(f"\nidle dashboard (baseline): process CPU {idle['cpu_percent']:.0f}% of one core")
    report(f"paced at {args.rate:.0f} steps/s for {args.seconds:.0f} s",
           asyncio.run(measure(args.rate, args.seconds, args.history)))
    report(f"as fast as possible for {args.seconds:.0f} s", asyncio.run(measure(0, args.seconds, args.history)))
    print("\nheadless views (sdxl-tui train), per Step event:")
    for name, micros in console_cost().items():
        print(f"  {name:<12} {micros:.0f} µs")


if __name__ == "__main__":
    main()
