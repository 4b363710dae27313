r"""Save and load the tiny language model as a NumPy ``.npz`` file.

The file contains one array per parameter (``param/<dotted name>``), the
configuration as a JSON string (``config``), the vocabulary's code points
(``vocab``) and a format tag. Nothing is pickled, so :func:`load_checkpoint`
opens it with ``np.load(allow_pickle=False)`` and a file from elsewhere cannot
run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinycond.data.text import CharVocab
from tinycond.lm.config import LMConfig
from tinycond.lm.model import TinyLM

FORMAT = "tinycond-lm-1"


def save_checkpoint(path, model: TinyLM, vocab: CharVocab) -> Path:
    """Write ``model``'s parameters, configuration and ``vocab`` to ``path`` (exactly that name) and return it."""
    arrays = {f"param/{name}": value for name, value in model.parameters()}
    arrays["config"] = np.array(json.dumps(model.config.to_dict(), sort_keys=True))
    arrays["vocab"] = vocab.code_points
    arrays["format"] = np.array(FORMAT)
    path = Path(path)
    with open(path, "wb") as file:  # a file object keeps np.savez from appending ".npz"
        np.savez(file, **arrays)
    return path


def _differences(saved: LMConfig, current: LMConfig) -> list[str]:
    saved_settings, current_settings = saved.to_dict(), current.to_dict()
    return [
        f"{name}: file has {saved_settings[name]!r}, this model has {current_settings[name]!r}"
        for name in saved_settings
        if saved_settings[name] != current_settings[name]
    ]


def load_checkpoint(path, model: TinyLM | None = None, vocab: CharVocab | None = None, *, dtype=np.float64):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
    model : TinyLM, optional
        Receives the parameters in place. Its configuration must equal the
        saved one; otherwise a ``ValueError`` names every setting that differs.
        Without a model, a new one is built from the saved configuration.
    vocab : CharVocab, optional
        If given, must equal the saved vocabulary (same characters).
    dtype : numpy dtype
        Parameter dtype of a newly built model.

    Returns
    -------
    model : TinyLM
    vocab : CharVocab
        The saved vocabulary.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; write one with --save PATH first")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(f"checkpoint {str(path)!r} is not a NumPy .npz file: {error}") from None
    with archive:
        if "format" not in archive.files or str(archive["format"]) != FORMAT:
            raise ValueError(f"{str(path)!r} is not a tinycond language-model checkpoint (no {FORMAT!r} format tag)")
        saved = LMConfig.from_dict(json.loads(str(archive["config"])))
        saved_vocab = CharVocab("".join(chr(c) for c in archive["vocab"]))
        params = {name[len("param/"):]: archive[name] for name in archive.files if name.startswith("param/")}

    if model is None:
        model = TinyLM(saved, rng=0, dtype=dtype)
    elif model.config != saved:
        raise ValueError(
            f"checkpoint {str(path)!r} was saved for another configuration; settings that differ:\n  "
            + "\n  ".join(_differences(saved, model.config))
        )
    if vocab is not None and vocab != saved_vocab:
        only_saved = sorted(set(saved_vocab.chars) - set(vocab.chars))
        only_current = sorted(set(vocab.chars) - set(saved_vocab.chars))
        raise ValueError(
            f"checkpoint {str(path)!r} was saved with another vocabulary (vocab: characters only in the file "
            f"{''.join(only_saved)!r}, only in this text {''.join(only_current)!r}); train on the same text"
        )

    current = dict(model.parameters())
    if set(current) != set(params):
        raise ValueError(
            f"checkpoint {str(path)!r} has parameters {sorted(set(params) - set(current))} that the model lacks "
            f"and lacks {sorted(set(current) - set(params))}"
        )
    for name, value in current.items():
        if params[name].shape != value.shape:
            raise ValueError(f"parameter {name} has shape {params[name].shape} in the file, {value.shape} in the model")
        value[...] = params[name]
    return model, saved_vocab


__all__ = ["FORMAT", "load_checkpoint", "save_checkpoint"]
