"""Fine-tuning the backbone itself: the ``finetune@<name>`` stage's library.

``model`` builds the network (frozen up to a graph node, a new output layer), ``data``
reads augmented training batches, ``train`` runs the resumable loop with ``checkpoint``
saving its state, ``persist`` saves the result hash-checked like a head, and ``predict``
and ``evaluate`` run it on images. For ``predict`` and ``compare``:
:func:`load_finetuned` then :func:`predict_images`.
"""

from classifiers.finetune.persist import FinetuneSidecar, load_finetuned
from classifiers.finetune.predict import PredictedBatch, predict_images

__all__ = ["FinetuneSidecar", "PredictedBatch", "load_finetuned", "predict_images"]
