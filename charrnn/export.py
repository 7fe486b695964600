"""A trained model as one self-contained web page that writes text in the browser (no network, works from file://).

The page embeds the vocabulary, the configuration and the weights (fp32, fp16, or int8 with one scale per row)
and a JavaScript batch-1 stepper with the arithmetic of `sampling.FastStepper`. `rounded_state_dict` gives the
weights exactly as the page computes with them, so Python can score and sample the page's model too.
"""

from __future__ import annotations

import base64
import ctypes
import html
import json
from importlib import resources
from string import Template

import torch
from torch import Tensor

from charrnn.errors import CharRNNError
from charrnn.files import PAGE_MARK, utf8
from charrnn.model import Network
from charrnn.vocab import Vocab

WEIGHT_FORMATS = ("fp32", "fp16", "int8")
DEFAULT_WEIGHTS = "int8"  # bench/RESULTS.md: ~1/4 of fp32's page size, within 0.01 bits/char of it


def round_tensor(tensor: Tensor, weights: str) -> tuple[Tensor, dict]:
    """(the tensor as the page will hold it, in fp32; its encoding for the page). int8 keeps one fp32 scale per
    row (the largest |value| of the row over 127), so every row uses the full int8 range."""
    t = tensor.detach().float().cpu().contiguous()
    if weights == "fp32" or t.dim() != 2:
        return t, {"dtype": "f32", "data": _b64(t)}
    if weights == "fp16":
        half = t.half()
        return half.float(), {"dtype": "f16", "data": _b64(half)}
    scale = t.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127  # (rows, 1)
    q = torch.round(t / scale).clamp(-127, 127).to(torch.int8)
    return q.float() * scale, {"dtype": "i8", "data": _b64(q), "scale": _b64(scale.flatten().contiguous())}


def _b64(t: Tensor) -> str:
    """A CPU tensor's bytes (little-endian on every platform torch and browsers share) in base64."""
    t = t.contiguous()
    return base64.b64encode(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())).decode("ascii")


def rounded_state_dict(network: Network, weights: str) -> dict[str, Tensor]:
    """The state_dict as the exported page computes with it (rounded to `weights`, back in fp32)."""
    _check(weights)
    return {name: round_tensor(t, weights)[0] for name, t in network.state_dict().items()}


def _check(weights: str) -> None:
    if weights not in WEIGHT_FORMATS:
        raise CharRNNError(f"--weights {weights!r}: use one of {', '.join(WEIGHT_FORMATS)}")


def page(network: Network, vocab: Vocab, *, title: str, about: dict, seed_text: str, weights: str = DEFAULT_WEIGHTS) -> str:
    """The HTML page: `about` (name, corpus, parameters, bits/char...) is shown as given, escaped."""
    _check(weights)
    c = network.config
    tensors = {name: round_tensor(t, weights)[1] for name, t in network.state_dict().items()}
    shapes = {name: list(t.shape) for name, t in network.state_dict().items()}
    model = {"cell": c.cell.value, "layers": c.layers, "hidden": c.hidden, "embedding": c.embedding, "skip": c.skip,
             "members": c.members, "vocab": vocab.chars, "shapes": shapes, "tensors": tensors, "weights": weights}
    template = Template(resources.files("charrnn").joinpath("export_page.html").read_text(encoding="utf-8"))
    # a run name that is not UTF-8 ("\udcff" from b"\xff") becomes "?", so the page can be written as UTF-8; the
    # rest of the page is JSON in ASCII
    return template.substitute(mark=PAGE_MARK, title=html.escape(utf8(title).decode("utf-8")), model_json=_script_json(model),
                               about_json=_script_json(about), seed_json=_script_json(seed_text))


def _script_json(value) -> str:
    """JSON safe inside a <script> element: no "</" can close it, no U+2028/9 can break a line."""
    return (json.dumps(value, ensure_ascii=True).replace("</", "<\\/"))
