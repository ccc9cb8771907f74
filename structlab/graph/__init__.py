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

**torchvision classification models** (``weights=None``, one builder per family, 32 x 32
input unless noted, torchvision 0.29; :func:`structlab.graph.families.survey`). Accepted means
every unit dimension is either a slot or fixed (network input / output); a refusal is the one
line of :class:`UnsupportedModelError`:

==================  ==================  ========  =============================================
family              builder             result    slots (groups) / refused at
==================  ==================  ========  =============================================
resnet              resnet18            accepted  12 (4)
resnet, bottleneck  resnet50            accepted  37 (4)
wide_resnet         wide_resnet50_2     accepted  37 (4)
vgg                 vgg11               accepted  10 (0)
vgg_bn              vgg11_bn            accepted  10 (0)
alexnet             alexnet (64 px)     accepted  7 (0)
resnext             resnext50_32x4d     refused   grouped convolution (layer1.0.conv2, groups=32)
regnet              regnet_y_400mf      refused   grouped convolution (groups=6)
squeezenet          squeezenet1_1       refused   concatenation (cat in features.3)
densenet            densenet121         refused   concatenation (cat in denseblock1.denselayer1)
googlenet           googlenet           refused   concatenation (cat in inception3a)
inception           inception_v3 (75)   refused   concatenation (cat in Mixed_5b)
mobilenet_v2        mobilenet_v2        refused   depthwise convolution (features.1.conv.0.0)
mobilenet_v3        mobilenet_v3_small  refused   depthwise convolution (features.1.block.0.0)
mnasnet             mnasnet0_5          refused   depthwise convolution (layers.3)
efficientnet        efficientnet_b0     refused   depthwise convolution (features.1.0.block.0.0)
efficientnet_v2     efficientnet_v2_s   refused   depthwise convolution (features.4.0.block.1.0)
shufflenet_v2       shufflenet_v2_x0_5  refused   depthwise convolution (stage2.0.branch1.0)
convnext            convnext_tiny       refused   permute (channels-last, for its LayerNorm)
vit                 vit_b_16 (32 px)    refused   reshape of the patch map into tokens
swin / swin_v2      swin_t, swin_v2_t   refused   permute (channels-last patches)
maxvit              maxvit_t (224 px)   refused   depthwise convolution (MBconv)
==================  ==================  ========  =============================================

Not supported, and refused where met: concatenation, grouped and depthwise convolutions,
LayerNorm / GroupNorm, reshapes and permutations other than a flatten, indexing, attention,
weights shared by two calls, and data-dependent control flow (a tracing failure).
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
