"""Images in, codes out, kept: the three jobs of the feature store, one subpackage each.

Data flows ``data`` -> ``compute`` -> ``store``; imports only go down:

- :mod:`features.data`: find, validate and decode images; the manifest of what to compute.
- :mod:`features.compute`: backbones and weights, the loader, the forward pass, the runner.
- :mod:`features.store`: crash-safe HDF5 shards, the index, the lock, maintenance.

``compute`` imports ``data`` and ``store``; ``data`` and ``store`` import neither, only
:mod:`features.errors`, :mod:`features.files` and :mod:`features.memory` beneath everything.
"""
