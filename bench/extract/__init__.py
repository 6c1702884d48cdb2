"""Extraction benchmark: the notebook loop against our extractor, same run, same images.

Measured, each on the same JPEG files:

- **naive** (``naive.py``): the loop every transfer-learning notebook has: ``ImageFolder``
  and PIL transforms (Resize 256, CenterCrop 224, ToTensor, Normalize), batch size 20,
  ``num_workers=0``, fp32, VGG16 truncated by hand after fc6+ReLU, one ``.cpu()`` a batch,
  codes kept in a list. It runs in a fresh child process, as a notebook kernel would, so
  nothing our extractor tunes in this process (allocator, threads) helps or hurts it;
- **ours** (``ours.py``): ``features.compute.extract.extract_codes`` end to end, JPEG files
  on disk to codes committed in a fresh feature store (decode workers, device normalisation,
  precision, channels_last, prefetch and committer threads, optional nvJPEG and
  torch.compile), model construction and store setup included, as they are in the naive
  timing;
- **model only**: our encoder on uint8 batches already in memory;
- **decode only**: our loader (and, with ``--gpu-decode``, the device decode path);
- **GPU utilisation** sampled during both loops (``n/a`` on CPU; ``machine.py``);
- **precision** (``precision.py``): the codes' relative error against fp32 on the same
  pixels, and the change in accuracy of the logistic-regression head (the pipeline's
  ``logreg``) under 5-fold cross-validation on the same folds.

Naive, ours and model-only alternate over ``--rounds`` (naive first, then last), so a
noisy shared machine hurts each alike. Weights are random (seed 0, identical in both
loops) unless ``--weights`` names real ones: speed does not depend on them, but the head
accuracies of random-weight codes say nothing about transfer learning. The images
(``data.py``), the table and the JSON (``report.py``) have modules of their own.

    python -m bench.extract --device cpu --limit 200          # make bench
    python -m bench.extract --device cpu --limit 1000 --precision-only

    # GPU machine: carry a 100-per-class subset, build 20,000 distinct JPEGs there
    python -m bench.extract --export-subset .benchdata/flowers --per-class 100
    python -m bench.extract --device cuda --data .benchdata/flowers --replicate 40 \
        --gpu-decode
    python -m bench.extract --device cuda --data .benchdata/flowers --replicate 40 \
        --gpu-decode --compile on --skip-naive --output bench/results/extract_cuda_compiled.json

Run it from the repository root. Results go to ``bench/results/extract_<device>.json`` (and
to ``$OUT`` when set). Imports stay to torch, torchvision, numpy, h5py, Pillow and
scikit-learn (no dask, no dvc), so it runs on a bare GPU machine from a plain checkout.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
