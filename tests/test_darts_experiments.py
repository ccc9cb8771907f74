"""The chapter's stored experiments of structlab.darts: data splits matched to the schedule,
genotype records, a stored search read back, the evaluation network's size and the long
search's checkpoints."""

from __future__ import annotations

import pytest
import torch

from structlab.darts import (
    DARTS_V2,
    VARIANTS,
    EvalNetwork,
    count_parameters,
    downsample,
    evaluate_run,
    genotype_from_record,
    genotype_record,
    is_discrete_cell,
    long_search_run,
    rnn_evaluate_run,
    rnn_search_run,
    search_run,
    search_split,
    variant_config,
)
from structlab.darts.genotypes import canonical_genotype, genotype_to_weights
from structlab.darts.operations import PRIMITIVES
from structlab.darts.rnn import DARTS_V2 as RNN_DARTS_V2
from structlab.darts.rnn import RNN_PRIMITIVES, RNNGenotype
from structlab.data.base import LabelledTensors
from structlab.data.text import Corpus
from structlab.experiment_store import ExperimentStore


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _images(n: int = 96, size: int = 8, seed: int = 0) -> LabelledTensors:
    g = torch.Generator().manual_seed(seed)
    return LabelledTensors(torch.rand(n, 1, size, size, generator=g),
                           torch.randint(0, 3, (n,), generator=g), name=f"toy{n}",
                           classes=["a", "b", "c"])


def test_search_split_follows_the_schedule():
    data = _images(220)
    w, a = search_split(data, "alternate")
    assert (len(w), len(a)) == (110, 110)
    w, a = search_split(data, "fimt", r=10)
    assert (len(w), len(a)) == (200, 20)  # 90.91 / 9.09 % (§5.3.3)
    both = torch.cat([w.inputs, a.inputs]).flatten(1)
    assert torch.unique(both, dim=0).shape[0] == len(data)  # disjoint, nothing lost


def test_variants_map_to_their_configs():
    assert variant_config("DARTS-PRIME").schedule == "fimt"
    assert variant_config("DARTS-PRIME").regularizer == "proximity"
    assert variant_config("CS10").schedule == "constant"
    assert VARIANTS["CRB"][2] == "crb"
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("DARTS-2ND")


def test_genotype_records_round_trip():
    for geno in (DARTS_V2, RNN_DARTS_V2):
        rec = genotype_record(geno)
        assert genotype_from_record(rec) == geno
    assert downsample(_images(4, 28), 14).inputs.shape[-1] == 14


def test_search_run_is_stored_valid_and_read_back(tmp_path):
    data = _images()
    store = ExperimentStore(tmp_path / "exp", quiet=True)
    rec = search_run("DARTS-PRIME", 0, data, C=2, layers=3, epochs=1, batch_size=16,
                     device="cpu", store=store)
    # FIMT split: 87 / 9 images, 5 w-steps of 16; alpha steps only when the schedule said so
    assert rec["n_w_steps"] == 5 and rec["n_alpha_steps"] == len(rec["alpha_steps"])
    geno = genotype_from_record(rec["genotype"])
    normal, reduce = genotype_to_weights(geno, PRIMITIVES)
    assert is_discrete_cell(normal, PRIMITIVES) and is_discrete_cell(reduce, PRIMITIVES)
    again = search_run("DARTS-PRIME", 0, data, C=2, layers=3, epochs=1, batch_size=16,
                       device="cpu", store=ExperimentStore(tmp_path / "exp", quiet=True,
                                                           resume=True))
    assert again["genotype"] == rec["genotype"] and again["search_time"] == rec["search_time"]


def test_crb_variant_is_stored_under_a_valid_name_and_prunes(tmp_path):
    data = _images()
    store = ExperimentStore(tmp_path / "exp", quiet=True)
    rec = search_run("DARTS-PRIME+CRB", 0, data, C=2, layers=3, epochs=1, batch_size=16,
                     alpha_lr=0.5, device="cpu", store=store)
    assert rec["activation"] == "crb" and "none" not in rec["primitives"]
    names = [p.name for p in (tmp_path / "exp").glob("*.pt")]
    assert len(names) == 1 and names[0].startswith("search-DARTS-PRIME-plus-CRB-seed0-")
    geno = genotype_from_record(rec["genotype"])
    assert all(op != "none" for op, _ in geno.normal + geno.reduce)


def _tiny_corpus(n: int = 80) -> Corpus:
    g = torch.Generator().manual_seed(0)
    words = ["the cat", "a dog", "my sister"], ["sat on", "ran to"], ["the mat", "a tree"]

    def sentence() -> list[str]:
        return " ".join(w[int(torch.randint(len(w), (1,), generator=g))] for w in words).split()

    return Corpus.from_sentences([sentence() for _ in range(n)], [sentence() for _ in range(20)],
                                 [sentence() for _ in range(20)], name="tiny")


@pytest.mark.parametrize("variant", ["DARTS", "DARTS-PRIME"])
def test_rnn_search_and_evaluation_runs(tmp_path, variant):
    corpus = _tiny_corpus()
    store = ExperimentStore(tmp_path / "exp", quiet=True)
    rec = rnn_search_run(variant, 0, corpus, ninp=8, nhid=8, batch_size=4, bptt=5,
                         alpha_lr=0.1, device="cpu", store=store)
    # the w-stream is the schedule's share of the tokens, cut into batch_size x bptt windows
    n_w = round({"DARTS": 0.5, "DARTS-PRIME": 10 / 11}[variant] * len(corpus.train))
    assert rec["n_w_steps"] == -(-(n_w // 4 - 1) // 5)
    assert rec["primitives"] == list(RNN_PRIMITIVES)
    geno = genotype_from_record(rec["genotype"])
    assert isinstance(geno, RNNGenotype) and len(geno.recurrent) == 8
    assert all(op != "none" and 0 <= j <= i for i, (op, j) in enumerate(geno.recurrent))
    if variant == "DARTS":
        assert rec["n_alpha_steps"] == rec["n_w_steps"]  # alternating: one alpha step per w-step
    out = rnn_evaluate_run(rec["genotype"], 0, corpus, ninp=8, nhid=8, epochs=1, batch_size=4,
                           bptt=5, device="cpu", store=store, tag=f"-{variant}")
    assert out["finite"] and out["test_perplexity"] > 1.0


def test_evaluation_network_size_and_long_search_checkpoints(tmp_path):
    data = _images()
    rec = evaluate_run(genotype_record(DARTS_V2), 0, data, _images(30, seed=1), C=4, layers=3,
                       epochs=1, batch_size=16, device="cpu")
    net = EvalNetwork(4, 3, 3, canonical_genotype(DARTS_V2), auxiliary=True, in_channels=1)
    assert rec["params"] == count_parameters(net)
    assert 0.0 <= rec["accuracy"] <= 1.0
    long = long_search_run("DARTS", 0, data, epochs=2, checkpoints=2, C=2, layers=3,
                           batch_size=16, device="cpu")
    assert long["steps"] == [3, 6]  # 48 images for w: 3 steps per epoch
    assert all(0 <= k <= 8 for k in long["skip_normal"] + long["skip_reduce"])


def test_chapter_figures_draw_from_stored_records():
    import matplotlib

    matplotlib.use("Agg")
    from structlab.darts import figures

    data = _images()
    searches = [search_run(v, 0, data, C=2, layers=3, epochs=1, batch_size=16, device="cpu",
                           record_every=2) for v in ("DARTS", "DARTS-PRIME")]
    evaluations = [{"test_error": 50.0 + i, "params": 1000 + i} for i in range(2)]
    frame = figures.search_frame(searches, evaluations)
    summary = figures.summary_frame(frame)
    assert list(summary.index) == ["DARTS", "DARTS-PRIME"]
    assert summary.loc["DARTS", "alpha_steps"] == searches[0]["n_alpha_steps"]
    for s, row in zip(searches, frame.itertuples()):
        ops = [op for op, _ in s["genotype"]["normal"]]
        assert row.free_normal == sum(op in figures.PARAMETER_FREE for op in ops) <= 8
        assert row.skip_normal == ops.count("skip_connect") <= row.free_normal
    figures.plot_error_vs_size(frame)
    figures.plot_fimt_schedule(searches[1])
    fig = figures.plot_alpha_trajectories(searches[0], "normal")
    assert sum(ax.get_visible() for ax in fig.axes) == 14  # one panel per edge
    figures.plot_genotypes({s["variant"]: s["genotype"] for s in searches})
    fig = figures.plot_skip_collapse([{"variant": "DARTS", "seed": 0, "steps": [4, 8],
                                       "skip_normal": [0, 1], "skip_reduce": [0, 0]}], epochs=2)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1.0, 2.0]  # checkpoints in epochs
