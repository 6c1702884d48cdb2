"""The timed rounds: naive, ours and model only, in reverse order every other round."""

from __future__ import annotations

from pathlib import Path

from bench.extract.data import BenchImages
from bench.extract.naive import run_naive, weights_file
from bench.extract.ours import ModelProbe, run_ours
from bench.extract.report import say, say_run
from bench.extract.settings import Setup

Run = dict[str, object]


def run_rounds(
    setup: Setup,
    images: BenchImages,
    refs: list,
    work: Path,
    keep: list[str],
    model_seconds: float,
    skip_naive: bool,
) -> tuple[list[Run], list[Run], dict[str, object]]:
    """Every round's naive and ours runs (``keep``: images whose naive codes are kept).

    Alternating the order means a noisy spell on a shared machine hurts each alike.
    """
    device, config = setup.device, setup.config
    say(f"model only: building the encoder ({setup.precision}, batch {config.batch_size}) ...")
    probe = ModelProbe(config, device, len(refs))
    say(f"  warm-up {probe.warm_up_seconds:.1f} s (compiled: {probe.compiled})")
    naive_runs: list[Run] = []
    ours_runs: list[Run] = []
    for number in range(setup.rounds):
        order = ("naive", "ours", "model") if number % 2 == 0 else ("model", "ours", "naive")
        for what in order:
            if what == "naive" and skip_naive:
                continue
            say(f"round {number + 1}/{setup.rounds}: {what} ...")
            if what == "model":
                say(f"  {probe.measure(model_seconds):.1f} images/s")
            elif what == "naive":
                run = run_naive(images, device, work, number, keep, weights_file(config))
                naive_runs.append(run)
                say_run(run)
            else:
                run = run_ours(refs, config, setup.limits, work / f"store_{number}", device)
                ours_runs.append(run)
                say_run(run)
    # The probe is freed on return, before the precision check builds two more encoders.
    return naive_runs, ours_runs, probe.summary()
