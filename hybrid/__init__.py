"""hybrid: classical forecasters and a Time-LLM core, side by side, routed.

The public Python API is :class:`hybrid.api.HybridForecaster`
(``from hybrid.api import HybridForecaster``); the command line is :mod:`hybrid.cli`.
"""

__version__ = "0.1.0"
