"""SaRA reproduction suite: the method as a library (``from sara import SaRA``) plus the
embedded world, baselines, metrics and experiments of the paper."""
__version__ = "0.1.0"
