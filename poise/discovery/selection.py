"""Parent selection: the paper's lineage prioritisation, and the comparators it claims to beat.

The paper picks each round's parent with an acquisition over archive nodes that rewards *descendant
potential*, not only current strength: in more than half of its 21 rounds the best child came from a
parent that was not the top scorer (notes §3, §11). The formula and constants are not published; this is
the reconstruction of notes §3, every constant in `SelectionConfig`.

    Acq(i) = w_pareto·Û_pareto(i) + w_perf·Û_perf(i) + w_div·Û_div(i) + w_gp·α̂_GP(i) − repeat_penalty·n_selected(i)

where ^ is min-max normalisation over the nodes (a term equal for every node carries no information
and becomes 0 for all; α_GP is divided by at least the spread of the observed d, so that differences
far smaller than how much d varies are not stretched to [0, 1]), and
    U_pareto(i) = 1 / rank(i), rank 1 = the non-dominated front of `objective.vector` (non-dominated sorting)
    U_perf(i)   = objective.scalar(metrics_i, baseline)
    U_div(i)    = 1 − max_r cos(f_i, f_r) over the features f of the parents of the last `div_window`
                  selections (div_mode="recent"; a zero vector is alike (1) only to another zero
                  vector, e.g. GRPO's empty tag set; U_div = 1 for every node when there are no features
                  or no selections yet), or the mean Euclidean distance to the `div_k` nearest other nodes
                  (div_mode="knn")
    α_GP(i)     = μ(x_i) + sqrt(β_t)·σ(x_i), a GP-UCB on the discounted top-K descendant gain:
        g_ij = γ^(depth_j − depth_i − 1) · (scalar_j − scalar_i)     for every descendant j of i
        d_i  = mean of the K largest g_ij, zero-padded to K values   (observed only when i has a descendant)
      e.g. K=3, descendants with gains 6 and −2: d = (6 − 2 + 0)/3 = 4/3.
      The GP (sklearn, C·Matern(ν=2.5) + White, normalize_y, hyperparameters by marginal likelihood,
      fixed random_state) is fitted on the nodes with an observed d_i, with inputs
      x_i = features_i ++ the objective vector min-max normalised per component; it predicts μ, σ for
      every node, so a childless node near a productive lineage inherits its promise. σ is the
      uncertainty about d itself (the fitted white noise is taken out of sklearn's predictive σ), and
      the white noise may explain at most half the variance of d: the premise of lineage selection is
      that descendant potential is partly predictable, and with a handful of points an unbounded noise
      term would otherwise explain everything away and make μ flat.
      With fewer than 2 observed d_i a GP cannot be fitted meaningfully: observed nodes get μ = d_i, σ = 0
      and the others the prior μ = 0, σ = gp_prior_std (optimism for nodes without children).
      β_t is `beta` (default 2), or Srinivas et al.'s 2·log(n·t²·π²/(6δ)) with n nodes and round t.

The argmax is taken with ties broken by the lowest id (deterministic); temperature > 0 samples from a
softmax of Acq instead. `max_selections` caps how often a node may be chosen (ignored when every node
reached it). Failed and rejected entries are not nodes: their lessons reach the proposer through the
reflections, not through d_i.

Comparators (`select(strategy, ...)`): "lineage" (the above), "greedy" (argmax scalar), "random"
(uniform), "tournament" (the best scalar among `tournament_size` uniform picks). Everything here is a
pure function of plain data except `nodes_from_archive`, which reads an `Archive`.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from poise.discovery.archive import SELECT_EVENT
from poise.discovery.confirm import paired_seed_metrics, search_per_seed, seed_means
from poise.discovery.objective import Objective

STRATEGIES = ("lineage", "greedy", "random", "tournament")


@dataclass(frozen=True)
class Node:
    id: int
    parent_id: int | None  # None for the root
    depth: int
    metrics: dict  # means over seeds, keys of objective.METRIC_KEYS
    features: tuple[float, ...] = ()  # describes the mechanism (e.g. 0/1 tags); may be empty
    n_selected: int = 0  # how often already chosen as parent (drives the repeat penalty)
    selected_at: tuple[int, ...] = ()  # when it was chosen (round numbers or event ids; larger = later)
    seed_metrics: tuple[dict, ...] = ()  # the metrics of each search seed behind `metrics` (for the noise)

    @property
    def n_seeds(self) -> int:
        return max(1, len(self.seed_metrics))


@dataclass(frozen=True)
class SelectionConfig:
    w_pareto: float = 0.25  # equal weights: the paper gives none (notes §3)
    w_perf: float = 0.25
    w_div: float = 0.25
    w_gp: float = 0.25
    repeat_penalty: float = 0.05  # per past selection; 4 selections cost about one term's full weight
    max_selections: int | None = None  # hard cap per node (None = no cap)
    div_mode: str = "recent"  # "recent" (cosine to recent parents) or "knn" (distance to neighbours)
    div_window: int = 3  # selections (rounds) whose parents U_div compares against
    div_k: int = 3  # neighbours for div_mode="knn"
    top_k: int = 3  # K of the top-K descendant gain (notes §3 suggests 3: about one round's children)
    gamma: float = 0.7  # discount per generation below the child level (notes §3)
    beta: float = 2.0  # UCB exploration weight when beta_schedule="constant"
    beta_schedule: str = "constant"  # or "srinivas": 2·log(n·t²·π²/(6δ))
    delta: float = 0.1  # δ of the Srinivas schedule
    gp_prior_std: float = 1.0  # σ for childless nodes before a GP can be fitted, in scalar points
    gp_restarts: int = 2  # extra optimiser restarts of the marginal likelihood
    seed: int = 0  # random_state of the GP's optimiser restarts
    temperature: float = 0.0  # 0 = argmax; > 0 = softmax sampling over Acq
    tournament_size: int = 3
    # Racing (adaptive re-evaluation): a node about to become a parent for the second time, or leading the
    # search, is first trained on more search seeds until it has `race_seeds` (1 = off); see `to_race`
    race_seeds: int = 3

    def __post_init__(self):
        if self.div_mode not in ("recent", "knn"):
            raise ValueError(f"div_mode must be 'recent' or 'knn', got {self.div_mode!r}")
        if self.beta_schedule not in ("constant", "srinivas"):
            raise ValueError(f"beta_schedule must be 'constant' or 'srinivas', got {self.beta_schedule!r}")
        if self.top_k < 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"need top_k >= 1 and 0 < gamma <= 1, got top_k={self.top_k}, gamma={self.gamma}")


@dataclass(frozen=True)
class Score:
    node_id: int
    total: float  # what the strategy ranked by (Acq for "lineage", scalar for greedy/tournament, 0 for random)
    pareto: float  # normalised terms in [0, 1]
    perf: float
    div: float
    gp: float
    gp_mean: float  # raw μ and σ of the GP (nan for the comparators)
    gp_std: float
    descendant_gain: float | None  # observed d_i, or None without descendants
    scalar: float = 0.0  # objective.scalar of the node
    pareto_rank: int = 1
    penalty: float = 0.0  # repeat_penalty · n_selected


# -- building blocks ------------------------------------------------------------------------------------
def pareto_ranks(vectors: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (larger is better in every component): rank 1 is the front, rank 2 the front
    of what remains, and so on. Equal vectors share a rank."""
    n = len(vectors)
    v = [tuple(x) for x in vectors]

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    ranks = [0] * n
    left, rank = set(range(n)), 1
    while left:
        front = {i for i in left if not any(dominates(v[j], v[i]) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def _descendants(nodes: Sequence[Node]) -> dict[int, list[tuple[Node, int]]]:
    """For every node, its descendants among the nodes, each with the generations below its children
    (0 for a child, 1 for a grandchild, ...): the exponent of γ in the module docstring."""
    kids: dict[int, list[Node]] = {}
    for n in nodes:
        if n.parent_id is not None:
            kids.setdefault(n.parent_id, []).append(n)
    out: dict[int, list[tuple[Node, int]]] = {}
    for n in nodes:
        found, stack = [], list(kids.get(n.id, ()))
        while stack:
            j = stack.pop()
            found.append((j, j.depth - n.depth - 1))
            stack.extend(kids.get(j.id, ()))
        out[n.id] = found
    return out


def descendant_gains(nodes: Sequence[Node], scalars: dict[int, float], top_k: int = 3,
                     gamma: float = 0.7) -> dict[int, float | None]:
    """d_i of the module docstring for every node: None when i has no descendant among the nodes."""
    desc = _descendants(nodes)
    out: dict[int, float | None] = {}
    for n in nodes:
        gains = [gamma ** k * (scalars[j.id] - scalars[n.id]) for j, k in desc[n.id]]
        if not gains:
            out[n.id] = None
            continue
        top = sorted(gains, reverse=True)[:top_k]
        out[n.id] = sum(top) / top_k  # zero-padded to K
    return out


def scalar_noise(nodes: Sequence[Node], objective: Objective, baseline_metrics: dict | None) -> list[float]:
    """Standard error of each node's scalar (its mean over seeds): the seed spread of the node's own
    per-seed scalars when it has 2 or more seeds, else the spread pooled over the nodes that have them,
    divided by sqrt(seeds). 0 when no node has a second seed yet (nothing to estimate the noise from).

    A node whose per-seed scalars do not vary at all stays out of the pool: in a paired run that is the
    baseline, the reference every other node is measured through (`nodes_from_archive`), whose spread says
    nothing of the noise of a difference from it."""
    per_seed = [[objective.scalar(m, baseline_metrics) for m in n.seed_metrics] for n in nodes]
    pool = [v for v in per_seed if len(v) >= 2 and max(v) > min(v)]
    var = [float(np.var(v, ddof=1)) for v in pool]
    dof = [len(v) - 1 for v in pool]
    pooled = sum(v * d for v, d in zip(var, dof)) / sum(dof) if dof else 0.0
    out = []
    for n, v in zip(nodes, per_seed):
        sd2 = float(np.var(v, ddof=1)) if len(v) >= 2 else pooled
        out.append(math.sqrt(sd2 / n.n_seeds))
    return out


def gain_noise(nodes: Sequence[Node], se: dict[int, float], top_k: int = 3, gamma: float = 0.7) -> dict[int, float]:
    """Variance of each observed d_i from the scalars' standard errors: d_i averages K gains
    γ^k·(scalar_j − scalar_i), each with variance γ^2k·(se_j² + se_i²); the K largest of these variances
    are taken, whichever gains d_i averaged (conservative)."""
    out: dict[int, float] = {}
    for n, desc in _descendants(nodes).items():
        terms = [gamma ** (2 * k) * (se[j.id] ** 2 + se[n] ** 2) for j, k in desc]
        if terms:
            out[n] = sum(sorted(terms, reverse=True)[:top_k]) / top_k ** 2
    return out


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if not hi - lo > 1e-12:
        return [0.0] * len(values)
    return [(x - lo) / (hi - lo) for x in values]


def _feature_matrix(nodes: Sequence[Node]) -> np.ndarray:
    """Features padded with zeros to a common length (a tag vocabulary may grow during a run)."""
    width = max((len(n.features) for n in nodes), default=0)
    m = np.zeros((len(nodes), width))
    for i, n in enumerate(nodes):
        m[i, :len(n.features)] = n.features
    return m


def diversity(nodes: Sequence[Node], cfg: SelectionConfig) -> list[float]:
    """U_div of every node (raw, before normalisation)."""
    f = _feature_matrix(nodes)
    if f.shape[1] == 0:
        return [1.0] * len(nodes)
    if cfg.div_mode == "knn":
        if len(nodes) < 2:
            return [1.0] * len(nodes)
        d = np.linalg.norm(f[:, None, :] - f[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        k = min(cfg.div_k, len(nodes) - 1)
        return [float(np.sort(row)[:k].mean()) for row in d]
    history = sorted(((t, i) for i, n in enumerate(nodes) for t in n.selected_at), reverse=True)
    recent = list(dict.fromkeys(i for _, i in history[:cfg.div_window]))
    if not recent:
        return [1.0] * len(nodes)
    norms = np.linalg.norm(f, axis=1)

    def cos(i: int, r: int) -> float:
        if norms[i] == 0 or norms[r] == 0:  # no tags (e.g. GRPO itself): alike only to another tagless node
            return 1.0 if norms[i] == norms[r] else 0.0
        return float(f[i] @ f[r] / (norms[i] * norms[r]))
    return [1.0 - max(cos(i, r) for r in recent) for i in range(len(nodes))]


def beta_t(cfg: SelectionConfig, n_nodes: int, round: int) -> float:
    if cfg.beta_schedule == "constant":
        return cfg.beta
    t = max(1, round)
    return 2.0 * math.log(max(1, n_nodes) * t * t * math.pi ** 2 / (6.0 * cfg.delta))


def gp_posterior(x: np.ndarray, observed: dict[int, float], cfg: SelectionConfig,
                 noise: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """μ and σ at every row of x, from a GP fitted on the rows in `observed` (row index -> d_i).
    `noise` (row index -> variance of d_i, from the seed spread) enters as each observation's own noise,
    so a gain measured on one noisy seed pulls the fit less than one measured on several."""
    n = x.shape[0]
    mu, sd = np.zeros(n), np.full(n, cfg.gp_prior_std)
    if len(observed) < 2:  # too little to fit: the prior, exact at the one observation if any
        for i, d in observed.items():
            mu[i], sd[i] = d, 0.0
        return mu, sd
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=1.0, length_scale_bounds=(1e-2, 1e3), nu=2.5)
              + WhiteKernel(noise_level=0.1, noise_level_bounds=(1e-6, 0.5)))
    rows = sorted(observed)
    y = np.array([observed[i] for i in rows])
    y_var = float(y.var()) if y.var() > 1e-12 else 1.0
    # normalize_y divides the targets by their std, so their noise variances scale by 1/var(y)
    alpha = np.array([(noise or {}).get(i, 0.0) / y_var for i in rows]) + 1e-10
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=cfg.gp_restarts,
                                  random_state=cfg.seed, alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # routine with a handful of points
        gp.fit(x[rows], y)
        mu, sd = gp.predict(x, return_std=True)
    # predict() includes the white noise in σ; UCB wants the uncertainty about d itself, so remove it
    # (the noise level is in normalize_y's units: scale it back by the std of the targets).
    y_std = float(y.std()) if y.std() > 1e-12 else 1.0
    noise = gp.kernel_.k2.noise_level * y_std ** 2
    sd = np.sqrt(np.maximum(np.asarray(sd, float) ** 2 - noise, 0.0))
    return np.asarray(mu, float), sd


# -- strategies ---------------------------------------------------------------------------------------
@dataclass
class _Base:
    nodes: list[Node]
    scalars: list[float]
    ranks: list[int]
    pareto: list[float]
    perf: list[float]
    div: list[float]
    gains: dict[int, float | None] = field(default_factory=dict)


def _base(nodes: Sequence[Node], objective: Objective, baseline_metrics: dict | None, cfg: SelectionConfig) -> _Base:
    if not nodes:
        raise ValueError("no evaluated nodes to select a parent from: evaluate the baseline first")
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"node ids must be unique, got {sorted(ids)}")
    nodes = sorted(nodes, key=lambda n: n.id)
    scalars = [objective.scalar(n.metrics, baseline_metrics) for n in nodes]
    ranks = pareto_ranks([objective.vector(n.metrics) for n in nodes])
    gains = descendant_gains(nodes, {n.id: s for n, s in zip(nodes, scalars)}, cfg.top_k, cfg.gamma)
    return _Base(nodes, scalars, ranks, _minmax([1.0 / r for r in ranks]), _minmax(scalars),
                 _minmax(diversity(nodes, cfg)), gains)


def acquisition(nodes: Sequence[Node], objective: Objective, baseline_metrics: dict | None,
                cfg: SelectionConfig = SelectionConfig(), round: int = 1) -> list[Score]:
    """The lineage acquisition of every node (sorted by id), with its breakdown."""
    b = _base(nodes, objective, baseline_metrics, cfg)
    vec = np.array([objective.vector(n.metrics) for n in b.nodes], float)
    span = vec.max(axis=0) - vec.min(axis=0)
    vec_n = (vec - vec.min(axis=0)) / np.where(span > 1e-12, span, 1.0)
    x = np.hstack([_feature_matrix(b.nodes), vec_n])
    observed = {i: g for i, n in enumerate(b.nodes) if (g := b.gains[n.id]) is not None}
    se = scalar_noise(b.nodes, objective, baseline_metrics)
    var = gain_noise(b.nodes, {n.id: e for n, e in zip(b.nodes, se)}, cfg.top_k, cfg.gamma)
    mu, sd = gp_posterior(x, observed, cfg, {i: var[n.id] for i, n in enumerate(b.nodes) if n.id in var})
    alpha = mu + math.sqrt(beta_t(cfg, len(b.nodes), round)) * sd
    # Min-max, but over at least the spread of the observed gains: differences in α far smaller than
    # how much d actually varies (a GP that learnt nothing) must not be stretched to [0, 1].
    d_obs = list(observed.values())
    spread = max(float(alpha.max() - alpha.min()), max(d_obs) - min(d_obs) if d_obs else 0.0)
    gp = [float((a - alpha.min()) / spread) if spread > 1e-12 else 0.0 for a in alpha]
    out = []
    for i, n in enumerate(b.nodes):
        penalty = cfg.repeat_penalty * n.n_selected
        total = (cfg.w_pareto * b.pareto[i] + cfg.w_perf * b.perf[i] + cfg.w_div * b.div[i] + cfg.w_gp * gp[i]
                 - penalty)
        out.append(Score(n.id, total, b.pareto[i], b.perf[i], b.div[i], gp[i], float(mu[i]), float(sd[i]),
                         b.gains[n.id], b.scalars[i], b.ranks[i], penalty))
    return out


def _capped(nodes: Sequence[Node], scores: list[Score], cfg: SelectionConfig) -> list[Score]:
    """The scores of nodes still under max_selections (all of them when none is, or no cap)."""
    if cfg.max_selections is None:
        return scores
    sel = {n.id: n.n_selected for n in nodes}
    ok = [s for s in scores if sel[s.node_id] < cfg.max_selections]
    return ok or scores


def _argmax(scores: list[Score]) -> int:
    """Highest total; ties go to the lowest id (scores are sorted by id)."""
    best = max(s.total for s in scores)
    return next(s.node_id for s in scores if s.total >= best - 1e-12)


def _softmax_pick(scores: list[Score], temperature: float, rng: random.Random) -> int:
    top = max(s.total for s in scores)
    w = [math.exp((s.total - top) / temperature) for s in scores]
    r, acc = rng.random() * sum(w), 0.0
    for s, wi in zip(scores, w):
        acc += wi
        if r < acc:
            return s.node_id
    return scores[-1].node_id


def select_parent(nodes: Sequence[Node], objective: Objective, baseline_metrics: dict | None,
                  cfg: SelectionConfig = SelectionConfig(), rng: random.Random | None = None,
                  round: int = 1) -> tuple[int, list[Score]]:
    """Lineage prioritisation: the argmax of the acquisition (or a softmax sample when temperature > 0)."""
    scores = acquisition(nodes, objective, baseline_metrics, cfg, round)
    pool = _capped(nodes, scores, cfg)
    if cfg.temperature > 0:
        if rng is None:
            raise ValueError("softmax selection (temperature > 0) needs an rng: pass random.Random(seed)")
        return _softmax_pick(pool, cfg.temperature, rng), scores
    return _argmax(pool), scores


def _plain_scores(b: _Base, totals: Sequence[float]) -> list[Score]:
    return [Score(n.id, float(t), b.pareto[i], b.perf[i], b.div[i], 0.0, math.nan, math.nan, b.gains[n.id],
                  b.scalars[i], b.ranks[i]) for i, (n, t) in enumerate(zip(b.nodes, totals))]


def select(strategy: str, nodes: Sequence[Node], objective: Objective, baseline_metrics: dict | None,
           cfg: SelectionConfig = SelectionConfig(), rng: random.Random | None = None,
           round: int = 1) -> tuple[int, list[Score]]:
    """Pick a parent with one of STRATEGIES; returns (node id, per-node scores sorted by id)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "lineage":
        return select_parent(nodes, objective, baseline_metrics, cfg, rng, round)
    b = _base(nodes, objective, baseline_metrics, cfg)
    if strategy == "greedy":
        scores = _plain_scores(b, b.scalars)
        return _argmax(_capped(nodes, scores, cfg)), scores
    if rng is None:
        raise ValueError(f"strategy {strategy!r} needs an rng: pass random.Random(seed)")
    if strategy == "random":
        scores = _plain_scores(b, [0.0] * len(b.nodes))
        return rng.choice(_capped(nodes, scores, cfg)).node_id, scores
    scores = _plain_scores(b, b.scalars)  # tournament
    pool = _capped(nodes, scores, cfg)
    entrants = sorted(rng.sample(pool, min(cfg.tournament_size, len(pool))), key=lambda s: s.node_id)
    return _argmax(entrants), scores


def to_race(nodes: Sequence[Node], pick: int, objective: Objective, baseline_metrics: dict | None,
            cfg: SelectionConfig = SelectionConfig()) -> list[int]:
    """Racing: the nodes that must be trained on more seeds before `pick` may become this round's parent.

    A single search seed is noisy (GRPO's Overall varies by about a point from seed to seed), and a
    candidate that was lucky once can capture parent selection for the rest of a run. So before a pick
    stands, the picked node, when it would become a parent for the second time, and the leader (the
    best scalar), are raced: each that has fewer than `race_seeds` seeds is trained on the missing ones,
    then selection runs again on the new means, which may pick someone else. Each node is raced at most
    once (to `race_seeds`), so racing costs at most `race_seeds - 1` extra trainings per node that leads
    or is chosen twice, and nothing for the many that never are."""
    if cfg.race_seeds <= 1 or not nodes:
        return []
    by_id = {n.id: n for n in nodes}
    scalars = {n.id: objective.scalar(n.metrics, baseline_metrics) for n in nodes}
    best = max(scalars.values())
    leader = min(i for i, v in scalars.items() if v >= best - 1e-12)
    out = []
    for i in (pick, leader):
        n = by_id.get(i)
        if n is None or i in out or n.n_seeds >= cfg.race_seeds:
            continue
        if i == leader or n.n_selected >= 1:
            out.append(i)
    return out


# -- from the archive ---------------------------------------------------------------------------------
def nodes_from_archive(archive, features_fn: Callable[[Any], Sequence[float]], *,
                       fidelity: str | None = None, paired: bool = True) -> list[Node]:
    """Nodes for every evaluated entry with search evaluations: parent = first parent, depth along first
    parents, metrics = means over seeds of the keys available, n_selected / selected_at from the
    archive's "select" events (one per round). ``features_fn(entry)``: where the entry sits in mechanism
    space (the loop's is `discovery.propose.features`); `fidelity` restricts the means to evaluations at
    that fidelity; ``paired`` (protocol 2 and later) takes an entry's per-seed metrics through the baseline's on
    the same seeds (`confirm.paired_seed_metrics`)."""
    with archive.snapshot():
        everything = archive.entries(trajectories=False)
        selects = archive.events(kind=SELECT_EVENT)
    parent = {e.id: e.parent_id for e in everything}
    depth: dict[int, int] = {}

    def depth_of(i: int) -> int:
        if i not in depth:
            p = parent.get(i)
            depth[i] = 0 if p is None else depth_of(p) + 1
        return depth[i]

    picked: dict[int, list[int]] = {}
    for ev in selects:
        if ev.entry_id is not None:
            picked.setdefault(ev.entry_id, []).append(ev.id)
    evaluated = [e for e in everything if e.status == "evaluated" and e.search_evaluations(fidelity)]
    base = search_per_seed(everything[0], fidelity) if everything else {}
    nodes = []
    for e in evaluated:
        # paired through the baseline where it has the entry's seeds, as RunState's means are (confirm.search_means);
        # the baseline's own seeds then all read its mean: it is the reference, with no noise against itself
        own = search_per_seed(e, fidelity)
        by_seed = paired_seed_metrics(own, base) if paired else own
        per_seed = list(by_seed.values())
        metrics = seed_means(own if e.id == everything[0].id else by_seed)
        nodes.append(Node(e.id, e.parent_id, depth_of(e.id), metrics, tuple(float(x) for x in features_fn(e)),
                          len(picked.get(e.id, ())), tuple(picked.get(e.id, ())), tuple(per_seed)))
    return nodes
