"""Growing and pruning neurons during transfer learning: DYNO (thesis chapter 7).

A pretrained network is fine-tuned on a shifted distribution while the grow-and-prune framework
of Algorithm 5 (:class:`DYNO`, a training callback) adapts every hidden layer's width every
``every`` iterations, from forward activations only:

* TRIG_PRUNE / TRIG_GROW (eqs. 38-39, :mod:`~structlab.growprune.triggers`): how far the
  effective dimension phi_ED of a layer's post-activations (eq. 37) has moved from ``phi*``, its
  value at the layer's last structural change;
* SELECT_PRUNE (:func:`select_prune`): dormant ReLU neurons first, then greedily the neuron most
  cosine-similar to the others;
* INIT_GROW (:func:`init_grow`): NORTH-Select of chapter 6 with ``100 k`` candidates;
* per-layer FIFO buffers sized to hold more samples than neurons (:class:`DynamicBuffers`).

Surgical fine-tuning with Auto-RGN (:class:`AutoRGN`, Lee et al. 2022) scales layer-wise learning
rates by the relative gradient norm, alone or with DYNO. :mod:`~structlab.growprune.transfer`
holds the set-ups of §7.3 (ImageNet VGG-11 to Imagenette / Imagewoof / Galaxy10; at book scale a
small VGG pretrained on Fashion-MNIST classes 0-4) and the stored experiment
:func:`finetune_run`.

>>> from structlab.growprune import trig_grow, trig_prune
>>> trig_prune(phi=0.5, phi_star=0.8, width=100), trig_grow(phi=0.5, phi_star=0.8, width=100)
(27, 0)
"""

from structlab.growprune.buffers import DynamicBuffers
from structlab.growprune.dyno import DYNO
from structlab.growprune.report import (
    evaluation_changes,
    flops_trace,
    layer_changes,
    layer_effective_dimensions,
    layer_spectra,
    runs_frame,
    summary_frame,
    total_change,
)
from structlab.growprune.selection import (
    cosine_matrix,
    dormant_units,
    init_grow,
    is_relu_layer,
    select_prune,
)
from structlab.growprune.surgical import (
    AutoRGN,
    relative_gradient_norms,
    rgn_learning_rates,
    rgn_param_groups,
)
from structlab.growprune.transfer import (
    BOOK_SOURCE_CONFIG,
    BOOK_TARGETS,
    FULLSCALE_TARGETS,
    IMAGENET_VGG11_CONFIG,
    IMAGENETTE_CLASSES,
    IMAGEWOOF_CLASSES,
    METHODS,
    SMALL_SOURCE_CONFIG,
    TransferTask,
    TransferVGG,
    WeightsUnavailableError,
    book_source_data,
    book_task,
    class_subset,
    finetune_run,
    fullscale_task,
    imagenet_vgg11,
    inference_flops,
    load_source,
    load_targets,
    pretrain_source,
    scaled_config,
    transfer_model,
)
from structlab.growprune.triggers import (
    SCALINGS,
    GrowPruneTrigger,
    phi_from_gram,
    phi_of,
    scaled_spectrum,
    trig_grow,
    trig_prune,
)

__all__ = [
    "AutoRGN",
    "BOOK_SOURCE_CONFIG",
    "BOOK_TARGETS",
    "FULLSCALE_TARGETS",
    "DYNO",
    "DynamicBuffers",
    "GrowPruneTrigger",
    "IMAGENETTE_CLASSES",
    "IMAGENET_VGG11_CONFIG",
    "IMAGEWOOF_CLASSES",
    "METHODS",
    "SCALINGS",
    "SMALL_SOURCE_CONFIG",
    "TransferTask",
    "TransferVGG",
    "WeightsUnavailableError",
    "book_source_data",
    "book_task",
    "class_subset",
    "cosine_matrix",
    "dormant_units",
    "evaluation_changes",
    "layer_spectra",
    "finetune_run",
    "flops_trace",
    "fullscale_task",
    "imagenet_vgg11",
    "inference_flops",
    "init_grow",
    "is_relu_layer",
    "layer_changes",
    "layer_effective_dimensions",
    "load_source",
    "load_targets",
    "phi_from_gram",
    "phi_of",
    "pretrain_source",
    "relative_gradient_norms",
    "rgn_learning_rates",
    "rgn_param_groups",
    "runs_frame",
    "scaled_config",
    "scaled_spectrum",
    "select_prune",
    "summary_frame",
    "total_change",
    "transfer_model",
    "trig_grow",
    "trig_prune",
]
