"""The member registry: a name on the command line -> a configured member.

A name may carry a period, ``seasonal_naive@24``: a period expert (docs/architecture.md, "Period experts")
tied to that season. ``make_member`` is the only place that knows every
member. ``llm_core`` is imported only when the core is asked for, because
importing it imports torch (seconds, and memory, that a classical run does
not need); ``baselines`` never imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from baselines.arima import Arima
from baselines.ets import Ets
from baselines.linear import RidgeLinear
from baselines.naive import Drift, SeasonalNaive, WindowMean
from hybrid.config import Config
from kernel.contract import Forecaster
from kernel.errors import HybridInputError


def _seasonal_naive(cfg: Config, period: int | None) -> Forecaster:
    return SeasonalNaive(period=period or cfg.seasonal_naive.period)


def _linear(cfg: Config, period: int | None) -> Forecaster:
    return RidgeLinear(normalization=cfg.linear.normalization, alphas=cfg.linear.alphas)


def _nlinear(cfg: Config, period: int | None) -> Forecaster:
    return RidgeLinear(normalization="last", alphas=cfg.linear.alphas)


def _dlinear(cfg: Config, period: int | None) -> Forecaster:
    if cfg.linear.moving_avg < 3 or cfg.linear.moving_avg % 2 == 0:
        raise HybridInputError(f"linear.moving_avg must be an odd integer >= 3; got {cfg.linear.moving_avg}.")
    return RidgeLinear(normalization=cfg.linear.dlinear_normalization, alphas=cfg.linear.alphas,
                       decomposition=cfg.linear.moving_avg)


def _drift(cfg: Config, period: int | None) -> Forecaster:
    return Drift()


def _mean(cfg: Config, period: int | None) -> Forecaster:
    return WindowMean()


def _arima(cfg: Config, period: int | None) -> Forecaster:
    return Arima(**dataclasses.asdict(cfg.arima))  # the constructor takes the config's fields


def _ets(cfg: Config, period: int | None) -> Forecaster:
    return Ets(**{**dataclasses.asdict(cfg.ets), "period": period or cfg.ets.period})


def _timellm(cfg: Config, period: int | None) -> Forecaster:
    from llm_core.member import TimeLLM  # imports torch: only when the core is asked for (not a cycle)

    core = cfg.core if cfg.runtime.progress else dataclasses.replace(cfg.core, progress=False)  # one switch for every bar
    return TimeLLM(core, period=period)


# name -> (factory, accepts a period)
REGISTRY: dict[str, tuple[Callable[[Config, int | None], Forecaster], bool]] = {
    "seasonal_naive": (_seasonal_naive, True),
    "linear": (_linear, False),
    "timellm": (_timellm, True),
    "nlinear": (_nlinear, False),
    "dlinear": (_dlinear, False),
    "drift": (_drift, False),
    "mean": (_mean, False),
    "arima": (_arima, False),
    "ets": (_ets, True),
}


def parse_member(name: str) -> tuple[str, int | None]:
    """``"ets@24"`` -> ``("ets", 24)``; ``"linear"`` -> ``("linear", None)``."""
    base, at, period = name.partition("@")
    if base not in REGISTRY:
        raise HybridInputError(f"unknown member {name!r}; valid members: {', '.join(REGISTRY)}.")
    if not at:
        return base, None
    if not REGISTRY[base][1]:
        raise HybridInputError(f"member {base!r} takes no period; drop '@{period}' from {name!r}.")
    if not period.isdigit() or int(period) < 1:
        raise HybridInputError(f"member {name!r}: the period after '@' must be a positive integer.")
    return base, int(period)


def make_member(name: str, cfg: Config) -> Forecaster:
    """Build the member called ``name`` with its config section."""
    base, period = parse_member(name)
    member = REGISTRY[base][0](cfg, period)
    member.name = name
    return member


def uses_references(member: Forecaster) -> bool:
    """Whether a member reads other members' forecasts (the core): its contract flag."""
    return member.uses_references


def expand_period_experts(members: tuple[str, ...], experts: tuple[str, ...], periods: tuple[int, ...],
                          context_length: int) -> tuple[str, ...]:
    """Add ``name@p`` for every expert ``name`` and detected period p (docs/architecture.md, "Period experts").

    Periods longer than half the context (fewer than two cycles in a window)
    get no expert; names already listed are not repeated.
    """
    out = list(members)
    for base in experts:
        for p in periods:
            name = f"{base}@{p}"
            if p <= context_length // 2 and name not in out:
                out.append(name)
    return tuple(out)
