"""Constraints and search policies: what a model must meet, and how feasible models rank.

A *search policy* is a priority order of objectives, highest first, each with a tolerance
(the chapter's "model latency > model size > model accuracy"). Ranking is lexicographic
within tolerances: keep the candidates within the first objective's tolerance of the best on
it, among them those within the second's tolerance of their best, and so on; the last
objective decides exactly (then the key, so the answer is deterministic).

>>> p = Policy.parse("latency:10% > size > accuracy")
>>> [(o.name, o.tolerance, o.relative) for o in p.objectives]
[('latency', 0.1, True), ('size', 0.0, True), ('accuracy', 0.0, True)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tether.errors import TetherError

__all__ = ["Constraints", "Objective", "Policy", "PolicyError", "rank"]

# objective -> True when larger is better
OBJECTIVES = {"latency": False, "size": False, "params": False, "macs": False,
              "accuracy": True}
T = TypeVar("T")


class PolicyError(TetherError, ValueError):
    """A policy or constraint that cannot be read (the message names the part)."""


@dataclass(frozen=True)
class Objective:
    """One objective of a policy: its name, and how close to the best counts as a tie
    (relative: a fraction of the best value; absolute: in the objective's units)."""

    name: str
    tolerance: float = 0.0
    relative: bool = True

    @property
    def maximize(self) -> bool:
        return OBJECTIVES[self.name]


@dataclass(frozen=True)
class Policy:
    """Objectives in priority order (highest first)."""

    objectives: tuple[Objective, ...]

    @classmethod
    def parse(cls, text: str) -> Policy:
        """"latency > size > accuracy", each part optionally with ":T%" (relative) or ":T"
        (absolute: ms, bytes, count or accuracy points as a fraction)."""
        parts = [p.strip() for p in text.split(">")]
        objectives = []
        for part in parts:
            name, _, tol = part.partition(":")
            name = name.strip().lower()
            if name not in OBJECTIVES:
                raise PolicyError(f"policy '{text}': unknown objective '{name}'; choose from "
                                  f"{', '.join(OBJECTIVES)}")
            relative = True
            value = 0.0
            tol = tol.strip()
            if tol:
                try:
                    if tol.endswith("%"):
                        value = float(tol[:-1]) / 100.0
                    else:
                        value, relative = float(tol), False
                except ValueError:
                    raise PolicyError(f"policy '{text}': tolerance '{tol}' of {name} is not a "
                                      "number (e.g. 5% or 0.2)") from None
                if not value >= 0 or math.isinf(value):
                    raise PolicyError(f"policy '{text}': tolerance of {name} must be >= 0")
            objectives.append(Objective(name, value, relative))
        if len({o.name for o in objectives}) != len(objectives):
            raise PolicyError(f"policy '{text}': an objective appears twice")
        return cls(tuple(objectives))

    def __str__(self) -> str:
        def fmt(o: Objective) -> str:
            if not o.tolerance:
                return o.name
            return f"{o.name}:{o.tolerance * 100:g}%" if o.relative else f"{o.name}:{o.tolerance:g}"
        return " > ".join(fmt(o) for o in self.objectives)


def rank(candidates: Sequence[T], policy: Policy, value: Callable[[T, str], float],
         key: Callable[[T], str]) -> list[T]:
    """`candidates` ordered best first under `policy` (lexicographic within tolerances);
    `value(c, objective)` reads an objective, `key(c)` breaks the last ties."""
    remaining = list(candidates)
    ordered: list[T] = []
    while remaining:
        best = _best(remaining, policy, value, key)
        ordered.append(best)
        remaining.remove(best)
    return ordered


def _best(pool: list[T], policy: Policy, value: Callable[[T, str], float],
          key: Callable[[T], str]) -> T:
    for obj in policy.objectives:
        sign = -1.0 if obj.maximize else 1.0
        scores = [sign * value(c, obj.name) for c in pool]
        top = min(scores)
        slack = obj.tolerance * abs(top) if obj.relative else obj.tolerance
        pool = [c for c, s in zip(pool, scores) if s <= top + slack + 1e-12 * max(1.0, abs(top))]
        if len(pool) == 1:
            return pool[0]
    last = policy.objectives[-1] if policy.objectives else None
    if last is not None:
        sign = -1.0 if last.maximize else 1.0
        return min(pool, key=lambda c: (sign * value(c, last.name), key(c)))
    return min(pool, key=key)


@dataclass(frozen=True)
class Constraints:
    """Limits a model must meet; None leaves one open.

    Attributes:
        device: device id whose latency `max_latency_ms` bounds.
        max_latency_ms, max_size_bytes, max_params, max_macs: upper limits.
        min_accuracy: lower limit (a fraction).
    """

    device: str | None = None
    max_latency_ms: float | None = None
    max_size_bytes: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.max_latency_ms is not None and self.device is None:
            raise PolicyError("a latency limit needs the device it is measured on (--device)")
        for name in ("max_latency_ms", "max_size_bytes", "max_params", "max_macs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise PolicyError(f"{name} must be > 0. Received: {v}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise PolicyError(f"min_accuracy is a fraction in [0, 1]. Received: "
                              f"{self.min_accuracy}")

    def bounds(self) -> list[tuple[str, str, float]]:
        """(objective, "max" or "min", limit) of every set constraint."""
        out: list[tuple[str, str, float]] = []
        for obj, name in (("latency", "max_latency_ms"), ("size", "max_size_bytes"),
                          ("params", "max_params"), ("macs", "max_macs")):
            v = getattr(self, name)
            if v is not None:
                out.append((obj, "max", float(v)))
        if self.min_accuracy is not None:
            out.append(("accuracy", "min", float(self.min_accuracy)))
        return out

    def violations(self, values: Mapping[str, float]) -> dict[str, float]:
        """objective -> relative amount by which `values` break it (absent when met)."""
        out = {}
        for obj, side, limit in self.bounds():
            v = values[obj]
            if side == "max" and v > limit:
                out[obj] = (v - limit) / limit
            elif side == "min" and v < limit:
                out[obj] = (limit - v) / max(limit, 1e-9)
        return out

    def describe(self, objective: str) -> str:
        for obj, side, limit in self.bounds():
            if obj == objective:
                unit = {"latency": " ms", "size": " bytes"}.get(obj, "")
                return f"{'at most' if side == 'max' else 'at least'} {limit:g}{unit} {obj}" + (
                    f" on {self.device}" if obj == "latency" else "")
        return objective
