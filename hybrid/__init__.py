"""hybrid: classical forecasters and a Time-LLM core, side by side, routed.

The public Python API is :class:`hybrid.api.HybridForecaster`.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "HybridForecaster":
        from hybrid.api import HybridForecaster

        return HybridForecaster
    raise AttributeError(name)
