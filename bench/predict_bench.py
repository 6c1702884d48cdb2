"""What batching buys ``predict`` on many new images, on this machine's CPU.

``python bench/predict_bench.py`` trains a tiny head (random-weight VGG16, ``--px`` input,
the tests' params) on a few generated images, writes ``--images`` new generated JPEGs the
store has never seen, and times, end to end (hash, store lookup, read, decode, encode,
label):

* ``batched``: one ``predict`` call on the folder, new images encoded ``--batch`` at a time;
* ``batch_of_one``: the same call with ``batch_size: 1`` (one network, one image per
  forward pass), on the first ``--single`` images, extrapolated to all of them;
* ``call_per_image``: one ``predict`` call per file, as a shell loop over images runs it
  (head load, weights and network built on every call), timed on ``--calls`` files and
  extrapolated to all of them.

Speed does not depend on the weights' values. The load average is recorded before and
after, since other work shares this machine. The table is printed and written to
``bench/results/predict_cpu.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like make bench does

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench.extract.machine import machine_info  # noqa: E402
from features.compute.extract import extract_codes  # noqa: E402
from features.compute.loader import ImageRef  # noqa: E402
from features.data.manifest import build_manifest, write_manifest  # noqa: E402
from features.data.scan import scan_dataset  # noqa: E402
from features.data.synthetic import CLASSES, make_dataset, make_image  # noqa: E402
from pipeline import predict, train  # noqa: E402
from pipeline.params import load_params  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "predict_cpu.json"
BASE_PARAMS = ROOT / "tests" / "params.yaml"  # never the working params.yaml a user edits
HEAD = "logreg"


def _write_params(root: Path, px: int, batch: int) -> Path:
    """The tests' params with every path under ``root``: CPU, random weights, ``px`` input."""
    params = copy.deepcopy(yaml.safe_load(BASE_PARAMS.read_text()))
    params["paths"] = {key: str(root / value) for key, value in params["paths"].items()}
    params["downloads"] = {}
    params["data"]["root"] = str(root / "images")
    params["extract"].update(
        weights="random",
        device="cpu",
        precision="fp32",
        batch_size=batch,
        num_workers=0,
        preprocessing={"resize": px, "crop": px},
    )
    params["heads"] = {HEAD: {}}
    path = root / f"params_{batch}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _train_head(root: Path, params_path: Path) -> None:
    """A store and a head on 4 x 6 generated images, as the pipeline builds them."""
    params = load_params(params_path)
    images, manifest = Path(params.data.root), Path(params.paths.manifest)
    make_dataset(images, per_class=6)
    outcomes, predefined = scan_dataset(images, params.data.limits, n_jobs=1)
    rows, _, _ = build_manifest(outcomes, images, predefined, "salt", 0.25)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(manifest, rows)
    refs = [ImageRef(row.sha256, images / row.path) for row in rows]
    store = Path(params.paths.store)
    extract_codes(refs, store, params.extract, params.data.limits, False, lambda _: None)
    argv = [HEAD, "--manifest", str(manifest), "--store", str(store), "--params", str(params_path)]
    argv += ["--model", str(Path(params.paths.models) / f"{HEAD}.joblib")]
    argv += ["--metrics", str(root / "metrics.json"), "--predictions", str(root / "pred.csv")]
    train.main(argv)


def _new_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"new_{index:05d}.jpg"
        rng = np.random.default_rng([12345, index])
        make_image(CLASSES[index % len(CLASSES)], rng).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def _timed_predict(inputs: list[Path], params_path: Path) -> tuple[float, int]:
    """Seconds of one ``predict`` call, and how many of its rows carry a label."""
    started = time.perf_counter()
    rows, _ = predict.predict(HEAD, [str(path) for path in inputs], params_path)
    seconds = time.perf_counter() - started
    return seconds, sum(bool(row.label) for row in rows)


def _entry(seconds: float, images: int, **extra: object) -> dict[str, object]:
    return {
        "seconds": round(seconds, 3),
        "images": images,
        "images_per_second": round(images / seconds, 2),
        "ms_per_image": round(1000 * seconds / images, 3),
        **extra,
    }


def measure(
    root: Path, count: int, px: int, batch: int, single: int, calls: int
) -> dict[str, dict]:
    batched_params = _write_params(root, px, batch)
    single_params = _write_params(root, px, 1)
    _train_head(root, batched_params)
    files = _new_images(root / "new", count)
    _timed_predict(files[:batch], batched_params)  # warm-up: imports, oneDNN kernel choice
    seconds, labelled = _timed_predict([root / "new"], batched_params)
    batched = _entry(seconds, labelled, batch_size=batch)
    seconds, labelled = _timed_predict(files[:single], single_params)
    one = _entry(seconds / labelled * count, count, timed_images=single, extrapolated=True)
    per_call = [_timed_predict([path], batched_params)[0] for path in files[:calls]]
    loop = _entry(sum(per_call) / calls * count, count, timed_calls=calls, extrapolated=True)
    return {"batched": batched, "batch_of_one": one, "call_per_image": loop}


def _table(measurements: dict[str, dict]) -> str:
    fastest = measurements["batched"]["seconds"]
    lines = [f"{'mode':<16}{'seconds':>10}{'images/s':>10}{'ms/image':>10}{'x slower':>10}"]
    for mode, entry in measurements.items():
        lines.append(
            f"{mode:<16}{entry['seconds']:>10.2f}{entry['images_per_second']:>10.1f}"
            f"{entry['ms_per_image']:>10.2f}{entry['seconds'] / fastest:>10.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="new images to predict")
    parser.add_argument("--px", type=int, default=32, help="input side (resize and crop)")
    parser.add_argument("--batch", type=int, default=64, help="extract.batch_size")
    parser.add_argument("--single", type=int, default=100, help="images timed in batches of 1")
    parser.add_argument("--calls", type=int, default=20, help="single-image calls timed")
    args = parser.parse_args()
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as folder:
        measurements = measure(
            Path(folder), args.images, args.px, args.batch, args.single, args.calls
        )
    result = {
        "command": " ".join(["python bench/predict_bench.py", *sys.argv[1:]]),
        "machine": machine_info(torch.device("cpu")),
        "load_average": {"before": list(before), "after": list(os.getloadavg())},
        "config": {
            "backbone": "vgg16",
            "weights": "random",
            "input_px": args.px,
            "precision": "fp32",
            "head": HEAD,
            "new_images": args.images,
        },
        "measurements": measurements,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(measurements))
    print(f"load average before {before[0]:.2f}, after {os.getloadavg()[0]:.2f}; -> {RESULTS}")


if __name__ == "__main__":
    main()
