"""charrnn: character-level RNN language models (LSTM, GRU, RNN with Graves 2013 skips) on any text.

The public API (see charrnn.api, and the README's "Python" section):

    train(corpus=None, *, on_progress=None, log=None, **options) -> TrainResult
    load(path=None, *, device="auto") -> Model
    Model.generate(seed, *, length, temperature, top_k, top_p, random_seed, stop, echo) -> str
    Model.stream(seed, **options) -> iterator of str
    Model.evaluate(file=None, *, dynamic, strict, precision, ...) -> EvalResult (.bits_per_char, .to_dict())
    Model.summary() -> dict;  Model.trace(text) -> per-character surprise and cells
    CharRNNError: the one error type; its message says what went wrong and what to do.

These names load torch on first use, so `import charrnn` (and `charrnn --help`) stays fast.
"""

from charrnn.errors import CharRNNError

__version__ = "0.1.0"
__all__ = ["train", "load", "Model", "TrainResult", "Progress", "EvalResult", "CharRNNError", "__version__"]

_API = {"train", "load", "Model", "TrainResult", "Progress", "EvalResult"}


def __getattr__(name: str):
    if name in _API:
        import warnings

        warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # torch's, on import; none is needed
        from charrnn import api

        globals()[name] = value = getattr(api, name)  # once: later lookups find it directly
        return value
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
