"""charrnn: a character-level RNN text generator (train, sample, eval) on the command line."""

__version__ = "0.1.0"
