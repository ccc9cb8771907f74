"""Which torchvision classification models the slot inference accepts, and why not.

:func:`survey` builds one model per family (the smallest builder of each, ``weights=None``, so
nothing is downloaded), runs :func:`structlab.graph.infer_slots` at a small input and returns one
row per model: accepted with its number of slots and residual groups, or refused with the
one-line reason (the node it cannot handle). Run it with

    python -m structlab.graph.families
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from structlab.graph.infer import UnsupportedModelError, infer_slots

__all__ = ["FAMILIES", "FAMILY_SETS", "survey", "survey_one"]

#: family -> (builder name in ``torchvision.models``, input side, builder keyword arguments).
FAMILIES: dict[str, tuple[str, int, dict]] = {
    "resnet": ("resnet18", 32, {}),
    "resnet (bottleneck)": ("resnet50", 32, {}),
    "resnext": ("resnext50_32x4d", 32, {}),
    "wide_resnet": ("wide_resnet50_2", 32, {}),
    "vgg": ("vgg11", 32, {}),
    "vgg_bn": ("vgg11_bn", 32, {}),
    "alexnet": ("alexnet", 64, {}),
    "squeezenet": ("squeezenet1_1", 32, {}),
    "densenet": ("densenet121", 32, {}),
    "googlenet": ("googlenet", 32, {"aux_logits": False, "init_weights": False}),
    "inception": ("inception_v3", 75, {"aux_logits": False, "init_weights": False}),
    "mobilenet_v2": ("mobilenet_v2", 32, {}),
    "mobilenet_v3": ("mobilenet_v3_small", 32, {}),
    "mnasnet": ("mnasnet0_5", 32, {}),
    "efficientnet": ("efficientnet_b0", 32, {}),
    "efficientnet_v2": ("efficientnet_v2_s", 32, {}),
    "shufflenet_v2": ("shufflenet_v2_x0_5", 32, {}),
    "regnet": ("regnet_y_400mf", 32, {}),
    "convnext": ("convnext_tiny", 32, {}),
    "vit": ("vit_b_16", 32, {"image_size": 32}),
    "swin": ("swin_t", 32, {}),
    "swin_v2": ("swin_v2_t", 32, {}),
    "maxvit": ("maxvit_t", 224, {}),
}

#: Named selections of :data:`FAMILIES` (the chapter's ``families`` parameter).
FAMILY_SETS: dict[str, list[str]] = {
    "few": ["resnet", "vgg_bn", "densenet", "mobilenet_v2"],
    "all": list(FAMILIES),
}


def survey_one(builder: str, size: int = 32, **kwargs) -> dict:
    """Infer the slots of ``torchvision.models.<builder>(weights=None, **kwargs)`` at a
    ``size x size`` input; one result row."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(weights=None, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    row = {"model": builder, "input": size}
    try:
        inferred = infer_slots(model, x)
    except UnsupportedModelError as exc:
        row.update(accepted=False, slots=0, groups=0, reason=str(exc))
        return row
    groups = sum(s.is_group for s in inferred.slots)
    row.update(accepted=True, slots=len(inferred.slots), groups=groups, reason="")
    return row


def survey(families: Sequence[str] | None = None) -> list[dict]:
    """One row per family of :data:`FAMILIES` (all by default), with the family's name."""
    rows = []
    for fam in families or list(FAMILIES):
        builder, size, kwargs = FAMILIES[fam]
        rows.append({"family": fam, **survey_one(builder, size, **kwargs)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the survey as a markdown table."""
    rows = survey(list(argv) if argv else None)
    print("| family | model | input | result | slots (groups) | refusal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        result = "accepted" if r["accepted"] else "refused"
        slots = f"{r['slots']} ({r['groups']})" if r["accepted"] else ""
        print(f"| {r['family']} | {r['model']} | {r['input']} | {result} | {slots} | "
              f"{r['reason']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
