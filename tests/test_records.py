"""The committed experiment records (``records/<chapter>/``) belong to the current code.

A book run of a converted chapter stores its experiments under ``records/``, committed so that a
fresh clone re-renders the chapter from them. Each record's JSON sidecar names the digest of the
code that produced it (:func:`structlab.experiment_store.code_digest` of the module that defines
the experiment). A record whose code is gone would never be read back again: it must be removed
(re-run the chapter's book profile with ``--fresh``).
"""

from __future__ import annotations

import json

import pytest
import torch

from structlab.experiment_store import code_digest
from structlab.pipeline import project_root

#: The module whose import closure each chapter's stored experiments depend on.
MODULES = {"data_and_baselines": "structlab.baselines",
           "grow_and_prune": "structlab.growprune.transfer",
           "heuristics_nas": "structlab.heuristics.book",
           "neural_operators": "structlab.operators.experiments"}
RECORDS = project_root() / "records"


@pytest.mark.parametrize("chapter", sorted(MODULES))
def test_every_record_belongs_to_the_current_code(chapter):
    files = sorted((RECORDS / chapter).glob("*.json"))
    assert files, f"records/{chapter} is empty: structlab run {chapter} --profile book"
    digest = code_digest(MODULES[chapter])
    for path in files:
        meta = json.loads(path.read_text(encoding="utf-8"))
        assert meta["code"] == digest, (f"{path.name} was made by other code: structlab run "
                                        f"{chapter} --profile book --fresh, then commit records/")
        assert path.with_suffix(".pt").is_file(), f"{path.name} has no result beside it"


@pytest.mark.parametrize("chapter", sorted(MODULES))
def test_records_hold_results_not_weights(chapter):
    for path in sorted((RECORDS / chapter).glob("*.pt")):
        assert path.stat().st_size < 256 * 1024, f"{path.name} is too large for a result record"
        result = torch.load(path, map_location="cpu", weights_only=False)["result"]

        def tensors(value):
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, dict):
                for v in value.values():
                    yield from tensors(v)
            elif isinstance(value, list | tuple):
                for v in value:
                    yield from tensors(v)

        assert sum(t.numel() for t in tensors(result)) < 10_000, f"{path.name} holds weights"
