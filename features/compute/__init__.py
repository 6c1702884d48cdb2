"""Computing codes: the one expensive pass, run once per image.

In order: ``backbones`` (which network, which named node) and ``weights`` (where they come
from, hash-checked) -> ``loader`` (files to uint8 batches in worker processes, optionally
``gpu_decode``) -> ``prefetch`` (the next batch made ready during this forward pass) ->
``encoder`` (normalise and run the network on the device) -> the store's committer.
``finite`` keeps NaN and inf out; ``config`` holds a run's settings and report.
``extract`` is the runner wiring them together; ``distributed`` runs it on Dask workers;
``encode`` computes codes outside the store.
"""

from features.compute.backbones import BACKBONES, BackboneSpec, build_extractor, get_backbone
from features.compute.backend import make_fingerprint, random_weights_banner
from features.compute.config import DaskConfig, ExtractConfig, ExtractReport
from features.compute.distributed import extract_with_dask
from features.compute.encode import encode_files, encode_images
from features.compute.encoder import Encoder
from features.compute.extract import extract_codes
from features.compute.loader import ImageRef, make_loader
from features.compute.weights import ResolvedWeights, WeightsError, resolve_weights

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DaskConfig",
    "Encoder",
    "ExtractConfig",
    "ExtractReport",
    "ImageRef",
    "ResolvedWeights",
    "WeightsError",
    "build_extractor",
    "encode_files",
    "encode_images",
    "extract_codes",
    "extract_with_dask",
    "get_backbone",
    "make_fingerprint",
    "make_loader",
    "random_weights_banner",
    "resolve_weights",
]
