"""The chapter's experiments: searches of every variant of Table 5, the evaluation of the cells
they find, a long search for the skip-connection collapse (Fig. 19) and the RNN search of
Table 6.

Each function is one experiment of an :class:`~structlab.experiment_store.ExperimentStore` when
a ``store`` is given (an interrupted book run reads back what finished) and seeds itself, so a
resumed run computes what a fresh one does. Results are plain dicts of numbers, lists and CPU
tensors; genotypes are stored as plain lists (:func:`genotype_record`) and rebuilt with
:func:`genotype_from_record`.

The variants (:data:`VARIANTS`) combine the three axes of §5.2 the way Table 5 names them:

=================  ============  ============  ==========
variant            schedule      regulariser   activation
=================  ============  ============  ==========
DARTS              alternate     none          softmax
CS10               constant      none          softmax
FIMT               fimt          none          softmax
PR                 alternate     proximity     softmax
DARTS-PRIME        fimt          proximity     softmax
ADMM               alternate     admm          softmax
CRB                alternate     none          crb
DARTS-PRIME+CRB    fimt          proximity     crb
=================  ============  ============  ==========

The search data are split between w and alpha as §5.3.3 says: 50/50 for the alternating
schedule, ``r / (r + 1)`` for the others (90.91 / 9.09 % for ``r = 10``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from structlab.darts.evalnet import Cutout, EvalNetwork, count_parameters
from structlab.darts.genotypes import Genotype, count_skip_connects
from structlab.darts.rnn import (
    LanguageTask,
    RNNEval,
    RNNGenotype,
    RNNSupernet,
    train_language_model,
)
from structlab.darts.schedules import train_fraction
from structlab.darts.search import ImageTask, SearchConfig, search
from structlab.darts.supernet import Supernet
from structlab.data.base import LabelledTensors
from structlab.data.text import Corpus
from structlab.experiment_store import ExperimentStore, run_experiment
from structlab.reproducibility import get_device, seed_everything

__all__ = [
    "VARIANTS",
    "variant_config",
    "downsample",
    "search_split",
    "genotype_record",
    "genotype_from_record",
    "search_run",
    "evaluate_run",
    "long_search_run",
    "corpus_subset",
    "rnn_search_run",
    "rnn_evaluate_run",
]

#: Table 5's variants: (schedule, regulariser, activation).
VARIANTS: dict[str, tuple[str, str, str]] = {
    "DARTS": ("alternate", "none", "softmax"),
    "CS10": ("constant", "none", "softmax"),
    "FIMT": ("fimt", "none", "softmax"),
    "PR": ("alternate", "proximity", "softmax"),
    "DARTS-PRIME": ("fimt", "proximity", "softmax"),
    "ADMM": ("alternate", "admm", "softmax"),
    "CRB": ("alternate", "none", "crb"),
    "DARTS-PRIME+CRB": ("fimt", "proximity", "crb"),
}


def _experiment_name(*parts: str) -> str:
    """A stored experiment's name from its parts ("+" of "DARTS-PRIME+CRB" spelt "-plus-")."""
    return "-".join(parts).replace("+", "-plus-")


def _check_variant(variant: str) -> tuple[str, str, str]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def variant_config(variant: str, *, r: float = 10, rho_p: float = 0.1,
                   alpha_lr: float = 3e-4, record_every: int = 50) -> SearchConfig:
    """The :class:`SearchConfig` of a variant: DARTS's hyperparameters, the variant's schedule
    and regulariser, ``r`` w-steps per alpha step, ``rho_p`` (0.1 images, 1.0 text)."""
    schedule, regularizer, _ = _check_variant(variant)
    return SearchConfig(schedule=schedule, r=r, regularizer=regularizer, rho_p=rho_p,
                        alpha_lr=alpha_lr, record_every=record_every)


def downsample(data: LabelledTensors, size: int) -> LabelledTensors:
    """``data`` with its images area-averaged to ``size x size`` (no change when already so)."""
    x = data.inputs
    if x.shape[-1] == size and x.shape[-2] == size:
        return data
    small = F.adaptive_avg_pool2d(x.float(), size)
    return LabelledTensors(small, data.targets, name=f"{data.name}@{size}px",
                           classes=data.classes)


def search_split(data: LabelledTensors, schedule: str, r: float = 10, *, seed: int = 0
                 ) -> tuple[LabelledTensors, LabelledTensors]:
    """The search data cut between the w-steps and the alpha steps as §5.3.3: 50/50 for the
    alternating schedule, ``r / (r + 1)`` otherwise (a seeded permutation)."""
    n = len(data)
    n_w = int(round(train_fraction(schedule, r) * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    w_idx, a_idx = perm[:n_w], perm[n_w:]
    w = LabelledTensors(data.inputs[w_idx], data.targets[w_idx], name=f"{data.name}/w",
                        classes=data.classes)
    a = LabelledTensors(data.inputs[a_idx], data.targets[a_idx], name=f"{data.name}/alpha",
                        classes=data.classes)
    return w, a


def _loader(data: LabelledTensors, batch_size: int, seed: int, shuffle: bool = True
            ) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


def _num_classes(data: LabelledTensors) -> int:
    return data.num_classes or int(data.targets.max()) + 1


def _image_search_setup(data: LabelledTensors, schedule: str, activation: str, *, C: int,
                        layers: int, batch_size: int, r: float, seed: int, dev: torch.device
                        ) -> tuple[Supernet, DataLoader, DataLoader]:
    """The supernet and the w / alpha loaders of one image search (split by the schedule)."""
    w_data, a_data = search_split(data, schedule, r, seed=seed)
    model = Supernet(C, _num_classes(data), layers, in_channels=data.inputs.shape[1],
                     activation=activation).to(dev)
    return model, _loader(w_data, batch_size, seed), _loader(a_data, batch_size, seed + 1)


def genotype_record(genotype: Genotype | RNNGenotype) -> dict[str, Any]:
    """A genotype as plain lists (what the experiment store keeps)."""
    return {k: [list(g) if isinstance(g, tuple) else g for g in v]
            for k, v in genotype._asdict().items()}


def genotype_from_record(record: Mapping[str, Any]) -> Genotype | RNNGenotype:
    """The genotype of :func:`genotype_record` back as a :class:`Genotype` (CNN) or
    :class:`RNNGenotype`."""
    def genes(v: Sequence) -> list[tuple[str, int]]:
        return [(str(op), int(j)) for op, j in v]
    if "recurrent" in record:
        return RNNGenotype(recurrent=genes(record["recurrent"]),
                           concat=tuple(record["concat"]))
    return Genotype(normal=genes(record["normal"]), normal_concat=list(record["normal_concat"]),
                    reduce=genes(record["reduce"]), reduce_concat=list(record["reduce_concat"]))


def _result_record(variant: str, seed: int, res: Any) -> dict[str, Any]:
    """The parts of a :class:`~structlab.darts.search.SearchResult` a chapter reads."""
    return {
        "variant": variant, "seed": seed, "activation": res.activation,
        "primitives": list(res.primitives), "genotype": genotype_record(res.genotype),
        "n_w_steps": res.n_w_steps, "n_alpha_steps": res.n_alpha_steps,
        "final_entropy": res.final_entropy, "search_time": res.wall_time,
        "fimt_samples": list(res.fimt_samples), "fimt_ema": list(res.fimt_ema),
        "thresholds": list(res.thresholds), "alpha_steps": list(res.alpha_steps),
        "losses": list(res.losses), "snapshot_steps": list(res.snapshot_steps),
        "snapshots": [s.cpu() for s in res.snapshots],
        "weights": [w.cpu() for w in res.weights],
        "pruned": [list(p) for p in res.pruned], "notes": list(res.notes),
    }


def search_run(variant: str, seed: int, data: LabelledTensors, *, C: int = 4, layers: int = 3,
               epochs: int = 1, batch_size: int = 32, r: float = 10, rho_p: float = 0.1,
               alpha_lr: float = 3e-4, record_every: int = 20,
               device: str | torch.device = "auto", quiet: bool = True,
               store: ExperimentStore | None = None) -> dict[str, Any]:
    """One first-order search of ``variant`` (:data:`VARIANTS`) on ``data`` (images ``[N, C_in,
    H, W]``), split between w and alpha by the variant's schedule (:func:`search_split`), on a
    ``Supernet(C, classes, layers)``.

    Returns the genotype (:func:`genotype_record`), the numbers of w- and alpha steps, the final
    edge entropy, the FIMT traces and alpha steps (Fig. 20), snapshots of the activated weights
    (Fig. 18), pruning events (CRB), skip-connections of each cell and the search's wall time.
    """
    schedule, _, activation = _check_variant(variant)
    config = variant_config(variant, r=r, rho_p=rho_p, alpha_lr=alpha_lr,
                            record_every=record_every)

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model, w_loader, a_loader = _image_search_setup(
            data, schedule, activation, C=C, layers=layers, batch_size=batch_size, r=r,
            seed=seed, dev=dev)
        res = search(model, ImageTask(), w_loader, a_loader, config, epochs=epochs, device=dev,
                     seed=seed, progress=not quiet)
        rec = _result_record(variant, seed, res)
        geno = genotype_from_record(rec["genotype"])
        rec["skip_normal"] = count_skip_connects(geno, "normal")
        rec["skip_reduce"] = count_skip_connects(geno, "reduce")
        return rec

    key = dict(variant=variant, seed=seed, data=data, C=C, layers=layers, epochs=epochs,
               batch_size=batch_size, r=r, rho_p=rho_p, alpha_lr=alpha_lr,
               record_every=record_every)
    return run_experiment(store, _experiment_name("search", variant, f"seed{seed}"), key, compute)


def _train_eval_network(model: EvalNetwork, train: LabelledTensors, test: LabelledTensors, *,
                        epochs: int, batch_size: int, lr: float, cutout: int,
                        drop_path: float, auxiliary_weight: float, seed: int,
                        dev: torch.device, quiet: bool) -> dict[str, Any]:
    """DARTS's evaluation protocol (SGD 0.9, wd 3e-4, cosine lr, clip 5, drop-path growing
    linearly to ``drop_path``, cutout, auxiliary loss weight) on in-memory tensors."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    cut = Cutout(cutout, generator=g) if cutout > 0 else None
    loader = _loader(train, batch_size, seed)
    bar = tqdm(total=epochs * len(loader), disable=quiet, desc="evaluate")
    for epoch in range(epochs):
        model.train()
        model.drop_path_prob = drop_path * epoch / epochs
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            if cut is not None:
                x = cut(x)
            out = model(x)
            if isinstance(out, tuple):
                logits, aux = out
                loss = F.cross_entropy(logits, y) + auxiliary_weight * F.cross_entropy(aux, y)
            else:
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            bar.update(1)
        sched.step()
    bar.close()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), 500):
            x = test.inputs[i:i + 500].to(dev)
            correct += int((model(x).argmax(1).cpu() == test.targets[i:i + 500]).sum())
    return {"accuracy": correct / len(test), "test_error": 100 * (1 - correct / len(test))}


def evaluate_run(genotype: Mapping[str, Any], seed: int, train: LabelledTensors,
                 test: LabelledTensors, *, C: int = 8, layers: int = 5, epochs: int = 2,
                 batch_size: int = 64, lr: float = 0.025, auxiliary: bool = True,
                 auxiliary_weight: float = 0.4, cutout: int = 0, drop_path: float = 0.2,
                 device: str | torch.device = "auto", quiet: bool = True,
                 store: ExperimentStore | None = None, tag: str = "") -> dict[str, Any]:
    """Train the evaluation network of ``genotype`` (a :func:`genotype_record`) from scratch with
    DARTS's protocol (§5.3.3) and return its test accuracy / error and parameter count (the
    auxiliary head excluded, as Table 5 counts)."""
    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = EvalNetwork(C, _num_classes(train), layers, genotype_from_record(genotype),
                            auxiliary=auxiliary, in_channels=train.inputs.shape[1]).to(dev)
        start = time.perf_counter()
        out = _train_eval_network(model, train, test, epochs=epochs, batch_size=batch_size,
                                  lr=lr, cutout=cutout, drop_path=drop_path,
                                  auxiliary_weight=auxiliary_weight, seed=seed, dev=dev,
                                  quiet=quiet)
        return {**out, "params": count_parameters(model), "train_time":
                time.perf_counter() - start}

    key = dict(genotype=dict(genotype), seed=seed, train=train, test=test, C=C, layers=layers,
               epochs=epochs, batch_size=batch_size, lr=lr, auxiliary=auxiliary,
               auxiliary_weight=auxiliary_weight, cutout=cutout, drop_path=drop_path)
    return run_experiment(store, _experiment_name(f"evaluate{tag}", f"seed{seed}"), key, compute)


def long_search_run(variant: str, seed: int, data: LabelledTensors, *, epochs: int,
                    checkpoints: int = 5, C: int = 4, layers: int = 3, batch_size: int = 32,
                    r: float = 10, rho_p: float = 0.1, alpha_lr: float = 3e-4,
                    device: str | torch.device = "auto", quiet: bool = True,
                    store: ExperimentStore | None = None) -> dict[str, Any]:
    """A long search (Fig. 19): the genotype derived at ``checkpoints`` evenly spaced points of
    the search, with its number of skip-connections per cell. Returns ``steps``, ``genotypes``
    (records), ``skip_normal``, ``skip_reduce`` and the final search record."""
    schedule, _, activation = _check_variant(variant)
    config = variant_config(variant, r=r, rho_p=rho_p, alpha_lr=alpha_lr, record_every=10**9)

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model, w_loader, a_loader = _image_search_setup(
            data, schedule, activation, C=C, layers=layers, batch_size=batch_size, r=r,
            seed=seed, dev=dev)
        total = epochs * len(w_loader)
        marks = {max(1, round(total * (i + 1) / checkpoints)) for i in range(checkpoints)}
        seen: list[tuple[int, Genotype]] = []

        def checkpoint(info: dict[str, Any]) -> None:
            if info["step"] + 1 in marks:
                seen.append((info["step"] + 1, info["model"].genotype()))

        res = search(model, ImageTask(), w_loader, a_loader, config, epochs=epochs, device=dev,
                     seed=seed, progress=not quiet, callback=checkpoint)
        return {"variant": variant, "seed": seed, "steps": [s for s, _ in seen],
                "genotypes": [genotype_record(g) for _, g in seen],
                "skip_normal": [count_skip_connects(g, "normal") for _, g in seen],
                "skip_reduce": [count_skip_connects(g, "reduce") for _, g in seen],
                "n_alpha_steps": res.n_alpha_steps, "search_time": res.wall_time}

    key = dict(variant=variant, seed=seed, data=data, epochs=epochs, checkpoints=checkpoints,
               C=C, layers=layers, batch_size=batch_size, r=r, rho_p=rho_p, alpha_lr=alpha_lr)
    return run_experiment(store, _experiment_name("long-search", variant, f"seed{seed}"), key,
                          compute)


def corpus_subset(corpus: Corpus, train_tokens: int, eval_tokens: int) -> Corpus:
    """The first ``train_tokens`` training and ``eval_tokens`` validation / test tokens of
    ``corpus``, with its vocabulary (book-scale runs of a full corpus)."""
    return Corpus(corpus.dictionary, corpus.train[:train_tokens], corpus.valid[:eval_tokens],
                  corpus.test[:eval_tokens],
                  name=f"{corpus.name}[{train_tokens}/{eval_tokens}]")


def _stream_split(tokens: torch.Tensor, schedule: str, r: float) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    n_w = int(round(train_fraction(schedule, r) * len(tokens)))
    return tokens[:n_w], tokens[n_w:]


def rnn_search_run(variant: str, seed: int, corpus: Corpus, *,
                   ninp: int = 64, nhid: int = 64, epochs: int = 1, batch_size: int = 32,
                   bptt: int = 20, r: float = 10, rho_p: float = 1.0, alpha_lr: float = 3e-3,
                   w_lr: float = 20.0, device: str | torch.device = "auto", quiet: bool = True,
                   store: ExperimentStore | None = None) -> dict[str, Any]:
    """One search of the DARTS RNN cell (Table 6) on the training tokens of ``corpus``
    (:func:`structlab.data.text.load_corpus`, :func:`corpus_subset`), cut between w and alpha as
    for images;
    DARTS's RNN search settings (SGD lr 20, clip 0.25, alpha Adam 3e-3, wd 1e-3) at a small
    width. Only DARTS-style softmax variants are defined for the RNN space."""
    schedule, _, activation = _check_variant(variant)
    if activation != "softmax":
        raise ValueError(f"the RNN search space has no {activation} variant (thesis Table 6)")

    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        w_tok, a_tok = _stream_split(corpus.train, schedule, r)
        task = LanguageTask(batch_size=batch_size, bptt=bptt)
        model = RNNSupernet(corpus.ntoken, ninp, nhid).to(dev)
        config = variant_config(variant, r=r, rho_p=rho_p, alpha_lr=alpha_lr)
        config = dataclasses.replace(config, w_lr=w_lr, w_lr_min=w_lr, w_momentum=0.0,
                                     w_weight_decay=5e-7, grad_clip=0.25)
        res = search(model, task, list(task.batches(w_tok, device=dev)),
                     list(task.batches(a_tok, device=dev)), config, epochs=epochs,
                     device=dev, seed=seed, progress=not quiet)
        return _result_record(variant, seed, res)

    key = dict(variant=variant, seed=seed, corpus=corpus, ninp=ninp, nhid=nhid,
               epochs=epochs, batch_size=batch_size, bptt=bptt, r=r, rho_p=rho_p,
               alpha_lr=alpha_lr, w_lr=w_lr)
    return run_experiment(store, _experiment_name("rnn-search", variant, f"seed{seed}"), key,
                          compute)


def rnn_evaluate_run(genotype: Mapping[str, Any], seed: int, corpus: Corpus, *,
                     ninp: int = 64, nhid: int = 64, epochs: int = 1, batch_size: int = 32,
                     bptt: int = 20, max_batches: int | None = None,
                     device: str | torch.device = "auto", store: ExperimentStore | None = None,
                     tag: str = "") -> dict[str, Any]:
    """Train the RNN of ``genotype`` from scratch (DARTS's evaluation protocol, shortened) and
    return its validation and test perplexity."""
    def compute() -> dict[str, Any]:
        seed_everything(seed)
        dev = get_device(device)
        model = RNNEval(genotype_from_record(genotype), corpus.ntoken, ninp, nhid).to(dev)
        start = time.perf_counter()
        out = train_language_model(model, corpus, epochs, batch_size=batch_size, bptt=bptt,
                                   eval_batch_size=10, test_batch_size=10,
                                   max_batches=max_batches, seed=seed, device=dev)
        valid = out["best_valid_perplexity"]
        return {"valid_perplexity": valid, "test_perplexity": out["test_perplexity"],
                "params": out["parameters"], "train_time": time.perf_counter() - start,
                "finite": math.isfinite(valid)}

    key = dict(genotype=dict(genotype), seed=seed, corpus=corpus, ninp=ninp, nhid=nhid,
               epochs=epochs, batch_size=batch_size, bptt=bptt, max_batches=max_batches)
    return run_experiment(store, _experiment_name(f"rnn-evaluate{tag}", f"seed{seed}"), key,
                          compute)
