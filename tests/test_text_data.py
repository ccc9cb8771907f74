"""Word-level corpora (structlab.data.text): tokenisation, vocabulary, splits, batches, loaders."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from structlab.data import DatasetUnavailableError, text
from structlab.data.text import (
    EOS,
    UNK,
    Corpus,
    batchify,
    find_wordnet,
    get_batch,
    load_corpus,
    ptb_tokenize,
    split_sentences,
    tokens_digest,
    wordnet_sentences,
)
from structlab.experiment_store import fingerprint


def test_ptb_tokenize_numbers_case_punctuation():
    assert ptb_tokenize("The 3 dogs ran 1,250.5 miles in 1990!") == [
        "the", "N", "dogs", "ran", "N", "miles", "in", "N"]
    assert ptb_tokenize("He didn't see Mr. Smith's car (e.g. a well-known one).") == [
        "he", "did", "n't", "see", "mr.", "smith", "'s", "car", "e.g.", "a", "well-known", "one"]
    assert ptb_tokenize("cost $5 or 10%; at 3:30") == ["cost", "$", "N", "or", "N", "%", "at", "N"]
    assert ptb_tokenize("  ;  ") == []


def test_corpus_vocabulary_unk_and_eos():
    train = [ptb_tokenize(s) for s in ["The cat sat on the mat", "The dog sat on 2 mats",
                                       "A bird sang"]]
    corpus = Corpus.from_sentences(train, [ptb_tokenize("The cow sat")],
                                   [ptb_tokenize("A cat sang 7 times")], max_vocab=6)
    # kept: <eos> and "the" (3 each), "on" and "sat" (2), "N" (1, first of the words seen once
    # alphabetically); <unk> stands for the 7 other words seen once and ranks first
    assert corpus.dictionary.idx2word == [UNK, EOS, "the", "on", "sat", "N"]
    decoded = corpus.dictionary.decode(corpus.valid)
    assert decoded == ["the", UNK, "sat", EOS]
    assert corpus.dictionary.decode(corpus.test)[-1] == EOS
    # every sentence ends in <eos>: as many <eos> as sentences
    eos = corpus.dictionary.word2idx[EOS]
    assert int((corpus.train == eos).sum()) == 3
    assert corpus.sizes() == {"train": 7 + 7 + 4, "valid": 4, "test": 6, "vocabulary": 6}
    assert 0 < corpus.unk_rate("train") < 1


def test_corpus_without_cap_adds_unk_only_when_needed():
    closed = Corpus.from_sentences([["a", "b"]], [["b"]], [["a"]], max_vocab=None)
    assert UNK not in closed.dictionary
    opened = Corpus.from_sentences([["a", "b"]], [["c"]], [["a"]], max_vocab=None)
    assert opened.dictionary.decode(opened.valid) == [UNK, EOS]


def test_split_is_seeded_disjoint_and_keeps_order():
    sentences = [[f"w{i}"] for i in range(200)]
    a = split_sentences(sentences, (0.1, 0.2), seed=3)
    b = split_sentences(sentences, (0.1, 0.2), seed=3)
    c = split_sentences(sentences, (0.1, 0.2), seed=4)
    assert a == b and a != c
    train, valid, test = a
    assert (len(train), len(valid), len(test)) == (140, 20, 40)
    ids = [int(s[0][1:]) for part in a for s in part]
    assert sorted(ids) == list(range(200))
    for part in a:
        order = [int(s[0][1:]) for s in part]
        assert order == sorted(order)
    with pytest.raises(ValueError):
        split_sentences(sentences, (0.5, 0.5))


def test_batchify_and_get_batch_shapes():
    data = torch.arange(103)
    source = batchify(data, 4)
    assert source.shape == (25, 4)
    assert source[:, 1].tolist() == list(range(25, 50))  # contiguous columns
    x, y = get_batch(source, 0, bptt=10)
    assert x.shape == y.shape == (10, 4)
    assert torch.equal(y[:-1], x[1:]) and torch.equal(y, source[1:11])
    x, y = get_batch(source, 20, bptt=10)  # the last window is shorter
    assert x.shape == (4, 4) and torch.equal(y[-1], source[-1])
    x, _ = get_batch(source, 0, bptt=10, seq_len=3)
    assert x.shape == (3, 4)
    with pytest.raises(ValueError):
        batchify(torch.arange(5), 4)


def test_tokens_digest_identifies_content():
    a = Corpus.from_sentences([["a", "b", "a"]], [["b"]], [["a"]], name="x")
    b = Corpus.from_sentences([["a", "b", "a"]], [["b"]], [["a"]], name="x")
    c = Corpus.from_sentences([["a", "b", "b"]], [["b"]], [["a"]], name="x")
    assert tokens_digest(a) == tokens_digest(b) != tokens_digest(c)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert fingerprint(a)["vocabulary"] == len(a.dictionary)


_WORDNET_LINES = {
    "data.noun": [
        "  1 This software and database is being provided to you, the LICENSEE",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known "
        "or inferred to have its own distinct existence (living or nonliving)  ",
        "00002452 03 n 01 thing 0 000 | a separate and self-contained entity  ",
        "00003553 03 n 01 whole 0 000 | an assemblage of parts; \"the team is a unit\"  ",
    ],
    "data.verb": [
        "00022316 29 v 01 sedate 0 000 01 + 09 00 | cause to be calm or quiet as by administering"
        " a sedative to; \"The patient must be sedated before the operation\"  ",
        "00022686 29 v 01 stimulate 0 000 | cause to be alert and energetic; \"Coffee and tea "
        "stimulate me\"; \"This herbal infusion doesn't stimulate\"  ",
    ],
    "data.adj": [
        "00001740 00 a 01 able 0 000 | (usually followed by `to') having the necessary means or "
        "skill or know-how or authority to do something; \"able to swim\"; \"she was able to "
        "program her computer\"  ",
        "00002098 00 a 01 unable 0 000 | (usually followed by `to') not having the necessary "
        "means or skill or know-how; \"unable to get to town without a car\"  ",
    ],
    "data.adv": [
        "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; \"they performed "
        "a cappella\"  ",
        "00001837 02 r 01 twice 0 000 | two times; \"the team is a unit\"  ",
    ],
}


def _write_wordnet(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, lines in _WORDNET_LINES.items():
        (folder / name).write_text("\n".join(lines) + "\n")


def test_wordnet_parsing_glosses_and_examples(tmp_path):
    _write_wordnet(tmp_path / "wn")
    sentences = wordnet_sentences(tmp_path / "wn")
    joined = [" ".join(s) for s in sentences]
    assert joined[0] == ("that which is perceived or known or inferred to have its own distinct "
                         "existence living or nonliving")
    assert "an assemblage of parts" in joined and "the team is a unit" in joined
    assert "this herbal infusion does n't stimulate" in joined
    assert "usually followed by to having the necessary means or skill or know-how or " \
           "authority to do something" in joined
    assert joined.count("the team is a unit") == 1  # the duplicate example is dropped
    assert not any("licensee" in s for s in joined)
    assert len(sentences) == 17  # 9 glosses + 9 examples, one of them a duplicate


def test_wordnet_corpus_from_a_copy_in_the_cache(tmp_path):
    _write_wordnet(tmp_path / "wordnet")  # root / "wordnet" is looked at first
    assert find_wordnet(tmp_path) == tmp_path / "wordnet"
    corpus = load_corpus("wordnet", root=tmp_path, download=False)
    assert corpus.name == "wordnet"
    total = sum(len(s) + 1 for s in wordnet_sentences(tmp_path / "wordnet"))
    sizes = corpus.sizes()
    assert sizes["train"] + sizes["valid"] + sizes["test"] == total
    assert list((tmp_path / "wordnet-text").glob("corpus-*.pt"))  # cached
    again = load_corpus("wordnet", root=tmp_path)
    assert tokens_digest(again) == tokens_digest(corpus)


def test_wordnet_missing_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "WORDNET_SYSTEM_DIRS", [tmp_path / "nowhere"])
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    with pytest.raises(DatasetUnavailableError) as info:
        load_corpus("wordnet", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "apt-get install wordnet-base" in message


def test_wordnet_corpus_of_the_system():
    if find_wordnet() is None:
        pytest.skip("WordNet's data files are absent: `apt-get install wordnet-base` "
                    "(`structlab data setup` does it as root)")
    corpus = load_corpus("wordnet")  # parsed once, then read from data_root()/wordnet-text
    sizes = corpus.sizes()
    assert sizes["vocabulary"] == 10_000
    assert sizes["train"] > 1_000_000 and sizes["valid"] > 80_000 and sizes["test"] > 80_000
    assert corpus.dictionary.idx2word[0] == EOS and "N" in corpus.dictionary
    assert 0.02 < corpus.unk_rate("train") < 0.12


def test_ptb_offline_fails_with_one_line(offline_cache):
    with pytest.raises(DatasetUnavailableError) as info:
        load_corpus("ptb")
    message = str(info.value)
    assert "\n" not in message
    assert "'ptb'" in message and "structlab data fetch ptb" in message


def test_ptb_failed_download_fails_with_one_line(tmp_path, monkeypatch):
    def no_network(folder):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(text, "_fetch_ptb", no_network)
    with pytest.raises(DatasetUnavailableError) as info:
        load_corpus("ptb", root=tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message and text.PTB_URL in message and "URLError" in message
    assert not (tmp_path / "ptb").exists()


_PTB_TINY = {"train": " the cat sat on the mat \n a <unk> sat \n",
             "valid": " the cat sat \n", "test": " a mat \n"}


def _fake_fetch(folder: Path) -> None:
    folder.mkdir(parents=True)
    for split, filename in text.PTB_FILES.items():
        (folder / filename).write_text(_PTB_TINY[split])


def test_ptb_reads_downloaded_files_and_checks_them(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "_fetch_ptb", _fake_fetch)
    with pytest.raises(DatasetUnavailableError, match="not the standard pre-processed PTB"):
        load_corpus("ptb", root=tmp_path, download=True)
    # with the expected sizes of the tiny files, the same files load
    monkeypatch.setattr(text, "PTB_TOKENS", {"train": 11, "valid": 4, "test": 3})
    monkeypatch.setattr(text, "MAX_VOCAB", 7)
    corpus = load_corpus("ptb", root=tmp_path, download=False)  # the cached files
    assert corpus.dictionary.decode(corpus.valid) == ["the", "cat", "sat", EOS]
    assert corpus.ntoken == 7 and UNK in corpus.dictionary


def test_unknown_corpus():
    with pytest.raises(ValueError, match="known corpora"):
        load_corpus("wikitext")
