"""Constrained evolutionary search for the subnet that fits a device (OFA's evolution, with
constraints on latency, size, parameters, MACs and accuracy and a lexicographic policy).

Each candidate is estimated without training: latency from the device's `LatencyModel`,
parameters and MACs exactly (`Arch.params` / `Arch.macs`), file size from the folded weight
count (fitted on library entries when there are any), accuracy from an `AccuracyPredictor`.
The population starts from feasible random samples; each generation keeps the best quarter
under the policy (`policy.rank`) as parents, mutates half of the new population from them and
crosses the rest. Every candidate evaluated counts against `max_samples`, so a constraint set
nothing in the space meets ends after a bounded number of samples with an answer naming the
constraint that cannot be met and the closest candidate (the smallest subnet is always among
those tried, since it bounds latency, size, parameters and MACs from below).

A latency limit is checked against the latency model's `bound` (the prediction raised by its
guard band), not the point prediction. When the device can run the candidates (it is this
machine), `search` also measures the answer end to end and, if it is over the limit, searches
again under a limit tightened by the miss, so what it returns met the limit when measured.
`search_ladder` answers a ladder of latency limits with nested models: each tighter limit's
answer has no more MACs and parameters than the looser one's, and a looser limit never gets a
worse answer under the policy than a tighter one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tether.cloud.policy import Constraints, Policy, PolicyError, rank
from tether.cloud.space import Arch, Block, SearchSpace

__all__ = ["Candidate", "SearchConfig", "SearchResult", "evolve", "folded_params",
           "make_estimator", "search", "search_ladder"]


def folded_params(arch: Arch, space: SearchSpace) -> int:
    """Weights of the converted model: convolutions with their batch norm folded into a bias,
    and the dense layer."""
    total = 0
    for kind, k, cin, cout, _, _ in arch.layers(space):
        if kind == "dense":
            total += cin * cout + cout
        elif kind == "dw":
            total += k * k * cin + cin
        else:
            total += k * k * cin * cout + cout
    return total


@dataclass(frozen=True)
class SearchConfig:
    """Evolution settings (OFA's defaults, fewer generations: the estimates are exact sums
    and a small MLP, so a generation costs milliseconds)."""

    population: int = 100
    generations: int = 30
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    max_samples: int = 20000
    seed: int = 0


@dataclass
class Candidate:
    arch: Arch
    values: dict[str, float]
    violations: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.arch.key(), "arch": self.arch.to_dict(), "estimates": self.values,
                "violations": self.violations}


@dataclass
class SearchResult:
    """The best feasible candidate, or (when none was found) why not.

    Attributes:
        best: the best feasible candidate under the policy, or None.
        unmet: descriptions of the constraints no candidate met (when best is None).
        closest: the candidate nearest to meeting every constraint (when best is None).
        samples: candidates evaluated.
        history: best feasible values per generation.
        best_seen: per constrained objective, the best value any sample reached.
        population: the final population (best first), to warm-start another search.
        measured_ms: arch key -> end-to-end latency measured on the device (`search` with a
            `measure` function), every answer it measured.
    """

    best: Candidate | None
    unmet: list[str]
    closest: Candidate | None
    samples: int
    history: list[dict[str, float]] = field(default_factory=list)
    best_seen: dict[str, float] = field(default_factory=dict)
    population: list[Candidate] = field(default_factory=list)
    measured_ms: dict[str, float] = field(default_factory=dict)

    def message(self, constraints: Constraints) -> str:
        if self.best is not None:
            return f"found {self.best.arch.key()}"
        assert self.closest is not None
        parts = []
        for obj in self.unmet:
            if obj == "latency" and self.measured_ms:
                parts.append(f"{constraints.describe(obj)} cannot be met when measured (the "
                             f"{len(self.measured_ms)} answers measured took "
                             f"{min(self.measured_ms.values()):.4g} ms or more)")
                continue
            parts.append(f"{constraints.describe(obj)} cannot be met (the best of "
                         f"{self.samples:,} subnets sampled, the smallest included, has "
                         f"{self.best_seen[obj]:.4g})")
        return ("no subnet meets the constraints: " + "; ".join(parts) +
                f"; closest: {self.closest.arch.key()}")


Estimator = Callable[[Sequence[Arch]], list[dict[str, float]]]


def make_estimator(space: SearchSpace, latency: Any = None, accuracy: Any = None,
                   size_fit: tuple[float, float] = (4.0, 4096.0)) -> Estimator:
    """Estimates every objective of a batch of archs (latency NaN without a latency model,
    accuracy NaN without a predictor). "latency" is the latency model's `bound` (what limits
    are checked against); "latency_predicted" is its point prediction."""
    def estimate(archs: Sequence[Arch]) -> list[dict[str, float]]:
        acc = (np.asarray(accuracy.predict(list(archs)), float) if accuracy is not None
               else np.full(len(archs), np.nan))
        out = []
        nan = float("nan")
        margin = float(latency.margin) if latency is not None else nan
        for a, acc_a in zip(archs, acc):
            point = latency.predict(a) if latency is not None else nan
            out.append({"latency": point * (1.0 + margin),  # the bound, from one sum
                        "latency_predicted": point,
                        "params": float(a.params(space)), "macs": float(a.macs(space)),
                        "size": size_fit[0] * folded_params(a, space) + size_fit[1],
                        "accuracy": float(acc_a)})
        return out
    return estimate


class _Genome:
    """An arch with a choice for every block slot (inactive slots too), for mutation and
    crossover."""

    def __init__(self, space: SearchSpace, arch: Arch, rng: random.Random) -> None:
        self.space = space
        self.resolution = arch.resolution
        self.depths = list(arch.depths)
        self.slots: list[list[Block]] = []
        for i, stage in enumerate(space.stages):
            row = list(arch.stages[i])
            while len(row) < stage.blocks:
                row.append(Block(rng.choice(space.expand_ratios), rng.choice(space.kernel_sizes)))
            self.slots.append(row)

    def arch(self) -> Arch:
        return Arch(self.resolution, tuple(tuple(self.slots[i][:d])
                                          for i, d in enumerate(self.depths)))

    def mutate(self, p: float, rng: random.Random) -> _Genome:
        g = self.copy()
        sp = self.space
        if rng.random() < p:
            g.resolution = rng.choice(sp.resolutions)
        for i in range(len(sp.stages)):
            if rng.random() < p:
                g.depths[i] = rng.choice(sp.stage_depths(i))
            for j, b in enumerate(g.slots[i]):
                e = rng.choice(sp.expand_ratios) if rng.random() < p else b.expand
                k = rng.choice(sp.kernel_sizes) if rng.random() < p else b.kernel
                g.slots[i][j] = Block(e, k)
        return g

    def cross(self, other: _Genome, rng: random.Random) -> _Genome:
        g = self.copy()
        pick = lambda a, b: a if rng.random() < 0.5 else b  # noqa: E731
        g.resolution = pick(self.resolution, other.resolution)
        g.depths = [pick(a, b) for a, b in zip(self.depths, other.depths)]
        g.slots = [[pick(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(self.slots, other.slots)]
        return g

    def copy(self) -> _Genome:
        g = object.__new__(_Genome)
        g.space, g.resolution, g.depths = self.space, self.resolution, list(self.depths)
        g.slots = [list(r) for r in self.slots]
        return g


def evolve(space: SearchSpace, constraints: Constraints, policy: Policy, estimate: Estimator,
           config: SearchConfig = SearchConfig(),
           on_generation: Callable[[int, int], None] | None = None,
           initial: Sequence[Arch] = ()) -> SearchResult:
    """Searches `space` for the best subnet under `policy` that meets `constraints`;
    `initial` archs (another search's population) join the first population where feasible."""
    rng = random.Random(config.seed)
    samples = 0
    closest: Candidate | None = None
    best_seen: dict[str, float] = {}

    def evaluate(archs: Sequence[Arch]) -> list[Candidate]:
        nonlocal samples, closest
        if not archs:
            return []
        out = []
        for a, values in zip(archs, estimate(archs)):
            needed = {o.name for o in policy.objectives} | {o for o, _, _ in constraints.bounds()}
            unknown = sorted(o for o in needed if not np.isfinite(values[o]))
            if unknown:
                raise PolicyError(f"the policy or constraints use {', '.join(unknown)}, which "
                                  "cannot be estimated here (no latency model for the device, "
                                  "or no accuracy predictor)")
            c = Candidate(a, values, constraints.violations(values))
            samples += 1
            for obj, side, _ in constraints.bounds():
                v = values[obj]
                if obj not in best_seen or (v < best_seen[obj] if side == "max"
                                            else v > best_seen[obj]):
                    best_seen[obj] = v
            if closest is None or sum(c.violations.values()) < sum(closest.violations.values()):
                closest = c
            out.append(c)
        return out

    def ranked(cands: list[Candidate]) -> list[Candidate]:
        return rank(cands, policy, lambda c, o: c.values[o], lambda c: c.arch.key())

    # Initial population: the smallest subnet (the lower bound of cost) and feasible samples.
    start = list({a.key(): a for a in [space.smallest(), space.largest(), *initial]}.values())
    population: list[Candidate] = [c for c in evaluate(start) if c.feasible]
    budget = config.max_samples
    while len(population) < config.population and samples < budget:
        batch = [space.sample(rng) for _ in range(min(200, budget - samples))]
        population += [c for c in evaluate(batch) if c.feasible]
    if not population:
        assert closest is not None
        unmet = [obj for obj, side, limit in constraints.bounds()
                 if (best_seen[obj] > limit if side == "max" else best_seen[obj] < limit)]
        if not unmet:  # each limit alone is reachable, not all at once
            unmet = sorted(closest.violations)
        return SearchResult(None, unmet, closest, samples, best_seen=best_seen)
    population = ranked(population)[:config.population]
    history = []
    n_parents = max(2, int(config.population * config.parent_ratio))
    n_mutate = int(config.population * config.mutation_ratio)
    for gen in range(config.generations):
        if samples >= budget:
            break
        parents = population[:n_parents]
        genomes = [_Genome(space, p.arch, rng) for p in parents]
        children: list[Arch] = []
        tries = 0
        while len(children) < n_mutate and tries < 20 * n_mutate:
            tries += 1
            children.append(rng.choice(genomes).mutate(config.mutate_prob, rng).arch())
        while len(children) < config.population - n_parents and tries < 40 * config.population:
            tries += 1
            a, b = rng.sample(genomes, 2)
            children.append(a.cross(b, rng).arch())
        seen = {p.arch.key() for p in parents}
        fresh = [c for c in children if c.key() not in seen]
        new = [c for c in evaluate(fresh) if c.feasible]
        population = ranked(parents + new)[:config.population]
        top = population[0]
        history.append({"generation": float(gen + 1), **top.values})
        if on_generation is not None:
            on_generation(gen + 1, config.generations)
    return SearchResult(population[0], [], None, samples, history, best_seen, population)


Measure = Callable[[Arch], float]


def search(space: SearchSpace, constraints: Constraints, policy: Policy, estimate: Estimator,
           config: SearchConfig = SearchConfig(), *, measure: Measure | None = None,
           rounds: int = 4, initial: Sequence[Arch] = (),
           on_generation: Callable[[int, int], None] | None = None) -> SearchResult:
    """`evolve`, then, with `measure` (arch -> end-to-end ms on the constrained device) and a
    latency limit, the answer measured: one over the limit by a factor f makes the next round
    search under its own estimate divided by f (and 1% less), so it and everything estimated
    as slow are excluded, up to `rounds` searches. Returns the first answer measured within
    the limit (its `values["latency"]` is then the measurement; `measured_ms` has every answer
    measured), or no answer naming the latency limit."""
    limit = constraints.max_latency_ms
    result = evolve(space, constraints, policy, estimate, config, on_generation, initial)
    if measure is None or limit is None or result.best is None:
        return result
    measured: dict[str, float] = {}
    met: Candidate | None = None
    inner, samples = limit, result.samples
    for _ in range(max(1, rounds)):
        assert result.best is not None
        best = result.best
        key = best.arch.key()
        if key not in measured:  # each answer is timed once
            measured[key] = float(measure(best.arch))
        ms = measured[key]
        if ms <= limit:
            met = Candidate(best.arch, {**best.values, "latency": ms})
            break
        # the answer's own estimate scaled by its miss: it, and what is as slow, now fail
        inner = min(inner, best.values["latency"] * limit / ms) * 0.99
        result = evolve(space, replace(constraints, max_latency_ms=inner), policy, estimate,
                        config, on_generation, [c.arch for c in result.population])
        samples += result.samples
        if result.best is None:
            break
    result.measured_ms, result.samples = measured, samples
    if met is None:
        return SearchResult(None, ["latency"], result.best or result.closest, samples,
                            result.history, {**result.best_seen,
                                             "latency": min(measured.values())},
                            result.population, measured)
    result.best = met
    return result


def _measured_once(measure: Measure) -> Measure:
    """`measure` with each subnet timed once, whichever budget asks: the figure an answer was
    checked against is the one it is reported with (a second timing of a shared machine
    could differ)."""
    cache: dict[str, float] = {}

    def once(arch: Arch) -> float:
        key = arch.key()
        if key not in cache:
            cache[key] = float(measure(arch))
        return cache[key]
    return once


def search_ladder(space: SearchSpace, constraints: Constraints, budgets: Sequence[float],
                  policy: Policy, estimate: Estimator, config: SearchConfig = SearchConfig(),
                  *, measure: Measure | None = None, rounds: int = 4,
                  initial: Sequence[Arch] = ()) -> list[SearchResult]:
    """One `search` per latency budget (ms, on `constraints.device`), answers nested: from the
    loosest budget to the tightest, each search is warm-started with the looser one's
    population and limited to the MACs and parameters of the looser one's answer; then, from
    the tightest up, a looser budget takes the tighter one's answer where the policy ranks it
    higher (it meets the looser budget too). `initial` archs (library entries) join every
    search's first population. Returns the results in the order of `budgets`."""
    if measure is not None:
        measure = _measured_once(measure)
    order = sorted(range(len(budgets)), key=lambda i: -budgets[i])
    results: dict[int, SearchResult] = {}
    cons = constraints
    warm: list[Arch] = []
    for i in order:
        res = search(space, replace(cons, max_latency_ms=float(budgets[i])), policy, estimate,
                     config, measure=measure, rounds=rounds, initial=[*initial, *warm])
        results[i] = res
        if res.best is not None:
            macs, params = int(res.best.values["macs"]), int(res.best.values["params"])
            cons = replace(cons, max_macs=min(macs, cons.max_macs or macs),
                           max_params=min(params, cons.max_params or params))
            warm = [c.arch for c in res.population]
    tighter: Candidate | None = None
    for i in reversed(order):
        res = results[i]
        if res.best is not None:
            if tighter is not None and rank([res.best, tighter], policy,
                                            lambda c, o: c.values[o],
                                            lambda c: c.arch.key())[0] is tighter:
                res.best = tighter
            tighter = res.best
    return [results[i] for i in range(len(budgets))]
