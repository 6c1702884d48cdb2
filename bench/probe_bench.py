"""The linear-probe protocol over a 45-point C grid (1e-6 to 1e5), against what a user
would write instead, on ~100-class codes as hard to fit as real ones.

Ours is the ``torch_logreg`` head exactly as ``train`` runs it on a store larger than RAM
(:func:`classifiers.probe_stream.fit_streaming_probe`, ``chunk_rows`` set, solver
``lbfgs``): codes streamed from a real store one chunk at a time, C searched coarse to
fine on a val split carved from train by content hash, then refitted on train + val. It
runs in a fresh process, so its peak RSS is its own. Tolerance: scikit-learn's default
(1e-4), for the sweep and the refit alike.

The baselines (:mod:`bench.probe_baselines`) are scikit-learn's ``GridSearchCV`` with a
refit and ``LogisticRegressionCV``, both 5-fold over the same grid; they would take hours,
so their time is estimated from measured parts, and the output says so. Which C they would
choose is computed (``--reference-sizes``): 5-fold CV accuracy on the same folds, with the
same objective solved by our solver (scikit-learn's lbfgs optimum, see
``tests/classifiers/test_probe_torch.py``), over grid points around our choice, widened
until the best is not at the window's edge.

The data (:mod:`bench.probe_data`) is generated, not computed by a network, and the
benchmark checks that it is as hard: scikit-learn's iterations on 400 generated rows of 5
classes against 400 random-weight VGG16 codes of real flowers, at the same Cs.

    python bench/probe_bench.py [--sizes 50000 200000] [--reference-sizes 50000]
    python bench/probe_bench.py --reference-only --reference-sizes 200000   # add one later

Writes ``bench/results/probe_cpu.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from the repo root

from bench.common import cpu_header, markdown_table  # noqa: E402
from bench.probe_baselines import (  # noqa: E402
    cold_iterations,
    count_iterations,
    estimate,
    iteration_cost,
)
from bench.probe_data import PlantedCodes, write_store  # noqa: E402
from bench.probe_reference import GRID, add_references, column_scaler, reference  # noqa: E402
from bench.rss import peak_rss_mib  # noqa: E402
from bench.timed import timed  # noqa: E402

FLOWERS = ROOT.parent / "shared" / "datasets" / "flower_photos" / "train"
DIFFICULTY_CS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
# Where the protocol's time goes: scaler passes, reading codes onto the device (when
# they fit there), L-BFGS fits (with their reads, when streaming), scoring val.
PHASES = ("_fit_scaler", "_on_device", "fit_one", "score_path")


def run_ours(store_root: Path, manifest: Path, chunk_rows: int, device: str) -> dict[str, Any]:
    """The protocol as ``train`` runs it, with the seconds spent in each of its phases,
    then test accuracy read chunk by chunk."""
    from classifiers import probe_stream
    from classifiers.data import split_rows
    from classifiers.heads import TorchLogRegParams
    from features.data.manifest import ManifestRow
    from features.store import FeatureStore

    rows = [ManifestRow(*row) for row in json.loads(manifest.read_text())]
    classes = sorted({row.label for row in rows})
    params = TorchLogRegParams(
        sweep_points=len(GRID), chunk_rows=chunk_rows, device=device, tol=1e-4, sweep_tol=1e-4
    )
    phases: dict[str, float] = {}
    started = time.perf_counter()
    with FeatureStore(store_root) as store, timed(probe_stream, PHASES, phases):
        result, n_fit = probe_stream.fit_streaming_probe(params, rows, store, classes, None)
        wall = time.perf_counter() - started
        test = split_rows(rows, "test", store)
        correct = 0
        for start in range(0, len(test), chunk_rows):
            block = test[start : start + chunk_rows]
            codes = store.get([row.sha256 for row in block]).astype(np.float32)
            correct += int(np.sum(result.model.predict(codes) == [row.label for row in block]))
    return {
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "chosen_C": result.params.C,
        "test_accuracy": correct / len(test),
        "n_fit": n_fit,
        "phases_s": phases,
        "probe": result.probe,
        "params": dataclasses.asdict(params),
    }


def ours_in_child(
    store_root: Path, rows: list, chunk_rows: int, scratch: Path, device: str = "cpu"
) -> dict:
    """:func:`run_ours` in a fresh process, so its peak RSS is its own."""
    manifest = scratch / "manifest.json"
    manifest.write_text(json.dumps([dataclasses.astuple(row) for row in rows]))
    out = scratch / "ours.json"
    command = [sys.executable, __file__, "--ours", str(store_root), str(manifest)]
    command += ["--chunk-rows", str(chunk_rows), "--device", device, "--out", str(out)]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def _flower_codes(n: int) -> tuple[np.ndarray, np.ndarray] | str:
    """Random-weight VGG16 fc6 codes of the first ``n / 5`` train images of each flower
    class, or why not."""
    if not FLOWERS.is_dir():
        return f"flower photos not found at {FLOWERS}"
    from features.compute.config import ExtractConfig
    from features.compute.encode import encode_images
    from features.data.images import ImageLimits

    images, labels = [], []
    for folder in sorted(p for p in FLOWERS.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in {".jpg", ".jpeg"})
        for file in files[: n // 5]:
            data = file.read_bytes()
            images.append((hashlib.sha256(data).hexdigest(), data))
            labels.append(folder.name)
    config = ExtractConfig(weights="random", device="cpu", batch_size=32)
    codes, _ = encode_images(images, config, ImageLimits())
    keep = [i for i, (sha, _) in enumerate(images) if sha in codes]
    return np.stack([codes[images[i][0]] for i in keep]), np.array([labels[i] for i in keep])


def difficulty(codes: PlantedCodes, n: int) -> dict[str, Any]:
    """scikit-learn's iterations on flower codes and on generated rows of five classes."""
    from sklearn.preprocessing import StandardScaler

    X, y = codes.array(n * codes.classes // 5 * 2)
    five = np.flatnonzero(y < 5)[:n]
    generated = (X[five].astype(np.float32), y[five])
    flowers = _flower_codes(n)
    report: dict[str, Any] = {"rows": n, "classes": 5, "C": DIFFICULTY_CS}
    for name, data in (("generated", generated), ("flowers_random_weights", flowers)):
        if isinstance(data, str):
            report[name] = {"skipped": data}
            continue
        scaled = StandardScaler().fit_transform(data[0].astype(np.float32))
        report[name] = [cold_iterations(scaled, data[1], C)[0] for C in DIFFICULTY_CS]
    return report


def one_size(
    n: int, args: argparse.Namespace, codes: PlantedCodes, counts, scratch: Path
) -> dict[str, Any]:
    print(f"\n== {n:,} train rows x {codes.dim}, {codes.classes} classes", flush=True)
    folder = scratch / f"rows{n}"
    folder.mkdir()
    rows, write_s = write_store(folder / "store", codes, n, args.test_rows)
    print(f"store written in {write_s:.1f} s", flush=True)
    ours = ours_in_child(folder / "store", rows, args.chunk_rows, folder)
    print(
        f"ours: {ours['wall_s']:.1f} s, C {ours['chosen_C']:.3g}, "
        f"test {ours['test_accuracy']:.4f}, peak RSS {ours['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    chosen = min(range(len(GRID)), key=lambda i: abs(np.log(GRID[i] / ours["chosen_C"])))
    X, y = codes.array(n)
    mean, scale = column_scaler(X.astype(np.float32))
    X = (X.astype(np.float32) - mean) / scale
    fold = len(y) * 4 // 5
    C = GRID[chosen]
    costs = {
        "fold32": iteration_cost(X[:fold], y[:fold], C),
        "full32": iteration_cost(X, y, C),
    }
    X64 = X.astype(np.float64)
    costs["fold64"] = iteration_cost(X64[:fold], y[:fold], C)
    costs["full64"] = iteration_cost(X64, y, C)
    del X64
    baselines = estimate(counts, chosen, costs)
    print(
        f"baselines (estimated): GridSearchCV {baselines['GridSearchCV_s']:.0f} s, "
        f"LogisticRegressionCV {baselines['LogisticRegressionCV_s']:.0f} s",
        flush=True,
    )
    result: dict[str, Any] = {"rows": n, "test_rows": args.test_rows, "store_write_s": write_s}
    result |= {"ours": ours, "baselines": baselines}
    if n in args.validate_sizes:
        iters, seconds = cold_iterations(X[:fold], y[:fold], C)
        predicted = counts.cold[chosen] * costs["fold32"].per_iteration_s
        result["check_one_cold_fit"] = {
            "rows": fold,
            "C": C,
            "iterations": iters,
            "seconds": seconds,
            "iterations_counted_on_sample": counts.cold[chosen],
            "seconds_estimated": predicted + costs["fold32"].per_fit_s,
        }
        print(
            f"check: one cold fit at {fold:,} rows took {iters} iterations, {seconds:.0f} s "
            f"(sample count {counts.cold[chosen]:.0f})",
            flush=True,
        )
    if n in args.reference_sizes:
        result["reference"] = reference(codes, X, y, (mean, scale), chosen, args.test_rows)
    return result


def _versus(baseline_s: float, ours_s: float) -> str:
    return f"~{baseline_s / 3600:.1f} h ({baseline_s / ours_s:.0f}x ours)"


def _row(result: dict[str, Any]) -> list[object]:
    ours, baselines = result["ours"], result["baselines"]
    cv = result.get("reference", {})
    return [
        f"{result['rows']:,}",
        f"{ours['wall_s']:.0f} s",
        f"{ours['peak_rss_mib']:.0f} MiB",
        f"{ours['chosen_C']:.3g}",
        f"{ours['test_accuracy']:.4f}",
        _versus(baselines["GridSearchCV_s"], ours["wall_s"]),
        _versus(baselines["LogisticRegressionCV_s"], ours["wall_s"]),
        f"{cv['chosen_C']:.3g} ({cv['grid_steps_from_ours']:+d})" if cv else "-",
        f"{cv['test_accuracy']:.4f}" if cv else "-",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--reference-sizes", type=int, nargs="*", default=[50_000])
    parser.add_argument("--validate-sizes", type=int, nargs="*", default=[50_000])
    parser.add_argument("--test-rows", type=int, default=10_000)
    parser.add_argument("--sample-rows", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--difficulty-rows", type=int, default=400)
    parser.add_argument("--chunk-rows", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/probe_cpu.json")
    parser.add_argument("--ours", nargs=2, type=Path, metavar=("STORE", "MANIFEST"))
    parser.add_argument("--device", default="cpu", help="where --ours fits")
    parser.add_argument(
        "--reference-only",
        action="store_true",
        help="add the 5-fold CV choice for --reference-sizes to --out's results, rerun nothing",
    )
    args = parser.parse_args(argv)
    if args.reference_only:
        add_references(args)
        return 0
    if args.ours:
        args.out.write_text(json.dumps(run_ours(*args.ours, args.chunk_rows, args.device)))
        return 0
    warnings.filterwarnings("ignore", category=UserWarning)
    load_before = os.getloadavg()
    started = time.perf_counter()
    codes = PlantedCodes(classes=args.classes)
    report: dict[str, Any] = cpu_header("python bench/probe_bench.py", sys.argv[1:], load_before)
    report["data"] = dataclasses.asdict(codes) | {"source": "generated (bench/probe_data.py)"}
    report["grid"] = {"points": len(GRID), "low": GRID[0], "high": GRID[-1]}
    report["difficulty"] = difficulty(codes, args.difficulty_rows)
    print("lbfgs iterations at C", DIFFICULTY_CS, json.dumps(report["difficulty"]), flush=True)
    X, y = codes.array(args.sample_rows, offset=10**8)
    mean, scale = column_scaler(X.astype(np.float32))
    counts = count_iterations((X.astype(np.float32) - mean) / scale, y, GRID)
    report["iteration_counts"] = dataclasses.asdict(counts)
    print(
        f"iterations on a {counts.rows:,}-row fold: cold {counts.cold_counted}, "
        f"warm path total {sum(counts.path)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="probe_bench_", dir=ROOT.parent) as scratch:
        report["sizes"] = [one_size(n, args, codes, counts, Path(scratch)) for n in args.sizes]
    report["total_s"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    header = (
        "| rows | ours | ours peak RSS | ours C | ours test acc | GridSearchCV (est.) "
        "| LogisticRegressionCV (est.) | 5-fold CV's C | its test acc |"
    )
    print("\n" + markdown_table(header, "|---:" * 9 + "|", [_row(r) for r in report["sizes"]]))
    print(f"\nwrote {args.out}; total {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
