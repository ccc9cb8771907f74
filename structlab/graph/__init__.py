"""Your own model: slots inferred from the traced graph of any traceable PyTorch network.

:func:`resizable` (a :class:`GraphModel`) traces a model with ``torch.fx``, propagates the shapes
of an example batch and infers every resizable group of units (see :mod:`structlab.graph.infer`);
the result is a :class:`~structlab.models.ResizableModel`, so every structural method of the
library works on it unchanged: :func:`structlab.operators.add_units` / ``remove_units`` /
``prune_units`` (magnitude or Taylor), :class:`structlab.neurogenesis.Neurogenesis` (NORTH*,
GradMax, ...) and :class:`structlab.growprune.DYNO`.

>>> import torch, torchvision
>>> from structlab.graph import resizable
>>> model = resizable(torchvision.models.resnet18(weights=None), torch.randn(2, 3, 32, 32))
>>> [s.name for s in model.layer_slots()][:3]
['conv1', 'layer1.0.conv1', 'layer1.1.conv1']

Where the growth methods need one producer (the NORTH* initializations and DYNO's INIT_GROW read
that producer's inputs) or one producer and one consumer (GradMax and the gradient trigger),
:meth:`GraphModel.single_slots` and :meth:`GraphModel.gradient_slots` list the slots that
qualify (:func:`growth_groups` and :func:`dyno_layers` give them in the form the callbacks take);
residual streams are pruned and resized as one group.

**torchvision classification models** (``weights=None``, 32 x 32 or the smallest input the
model takes, torchvision 0.29; :func:`structlab.graph.families.survey`):

=================  ========  ===============================================================
family             result    why (the node named by the refusal)
=================  ========  ===============================================================
resnet18-152       accepted  residual streams are groups (stem + every block's last conv)
resnext            refused   grouped convolution (``layer1.0.conv2``, groups=32)
wide_resnet        accepted  as resnet
vgg / vgg_bn       accepted  the first classifier layer reads 7 x 7 positions per channel
alexnet            accepted  (input 64 x 64)
squeezenet         refused   concatenation (``features.3`` Fire module)
densenet           refused   concatenation (dense connectivity)
googlenet          refused   concatenation (inception branches)
inception_v3       refused   concatenation (input 75 x 75)
mobilenet_v2/v3    refused   depthwise convolution
mnasnet            refused   depthwise convolution
efficientnet       refused   depthwise convolution
shufflenet_v2      refused   concatenation / channel shuffle
regnet             refused   grouped convolution
convnext           refused   depthwise convolution (and LayerNorm)
vit                refused   concatenation of the class token / Linear on tokens
swin               refused   permute (channels-last patches) / LayerNorm
maxvit             refused   depthwise convolution
=================  ========  ===============================================================

The exact refusal lines are those of :func:`~structlab.graph.families.survey`; the README and
the chapter "Your own model" show them.
"""

from structlab.graph.infer import (
    GraphModel,
    InferredSlots,
    ReLUTap,
    Tap,
    UnsupportedModelError,
    infer_slots,
    resizable,
)
from structlab.graph.methods import dyno_layers, growth_groups, same_slots

__all__ = [
    "GraphModel",
    "InferredSlots",
    "ReLUTap",
    "Tap",
    "UnsupportedModelError",
    "dyno_layers",
    "growth_groups",
    "infer_slots",
    "resizable",
    "same_slots",
]
