"""Cheap searches for each query's top-k keys, and the measures of how well they do.

A search gets one attention call's queries q (B, H, Tq, D) and keys k (B, H, Tk, D), the boolean
visibility (Tq, Tk) of the layer's mask and a budget `top`, and returns a `Selection`: which visible keys
each query attends to (at most `top`, all visible keys when there are fewer) and the multiply-adds spent.
The true top-k of a query are its `top` visible keys of highest score s = q.k * scale. Every weight
function of the study (exp, sigmoid) is increasing in s, so these are the keys of largest weight for
softmax and sigmoid attention alike.

- `ExactTopK` scores every visible key: the reference, and no saving on the scores.
- `Favor` ranks keys by the FAVOR+ estimate of exp(s): positive random features
  phi(x) = exp(w.x - |x|^2 / 2) / sqrt(m) with orthogonal Gaussian rows w, for which
  E[phi(q').phi(k')] = exp(q'.k') = exp(s) (q' = q * sqrt(scale), k' likewise). Ranking by exp(s) is
  ranking by s, so the estimate serves both weight functions.
- `KMeansBuckets` (an inverted file over keys) assigns each key to the nearest of C centroids, fitted
  beforehand on keys of other sequences; a query scores the centroids (q.c), visits its best `probes`
  buckets (and further ones, best first, until they hold `top` visible keys) and keeps the `top`
  highest exact scores among the visible keys found. A key's bucket depends on that key alone, so a
  query's selection never depends on later tokens.

Cost (multiply-adds per head and sequence; query i sees n_i keys, attends to r_i, D = head size):

    dense attention   2 D sum n_i                                (every score and every value)
    exact top-k       D sum n_i + D sum r_i                      (every score; values of the kept keys)
    FAVOR+, m         m D (Tq + Tk) + m sum n_i + 2 D sum r_i    (features, estimates; exact attention on the kept)
    k-means, C        C D (Tq + Tk) + D sum c_i + D sum r_i      (centroid scores and key assignment; exact scores
                                                                  of the c_i keys in visited buckets; values)

and compute fraction = cost / dense cost. Comparisons, sorting, exponentials and fitting the centroids
(once, offline) are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Selection:
    """keys: (B, H, Tq, Tk) boolean, the keys each query attends to; cost: multiply-adds spent in total."""

    keys: torch.Tensor
    cost: float


def top_keys(scores: torch.Tensor, visible: torch.Tensor, top: int) -> torch.Tensor:
    """Boolean mask of each row's `top` highest-scoring visible keys (every visible key when fewer)."""
    masked = scores.masked_fill(~visible, float("-inf"))
    index = masked.topk(min(top, scores.shape[-1]), dim=-1).indices
    chosen = torch.zeros(masked.shape, dtype=torch.bool, device=scores.device).scatter_(-1, index, True)
    return chosen & visible


def dense_cost(visible: torch.Tensor, batch: int, heads: int, head_size: int) -> float:
    """Multiply-adds of full attention: a score and a weighted value for every visible key."""
    return 2.0 * head_size * float(visible.sum()) * batch * heads


def _heads(q: torch.Tensor) -> float:
    return float(q.shape[0] * q.shape[1])


class Search:
    """A way to choose each query's keys; `label` names it in tables."""

    @property
    def label(self) -> str:
        return ""

    def fit(self, layer: int, keys: torch.Tensor) -> None:
        """Prepare layer `layer` from keys (H, M, D) of calibration sequences (most searches need nothing)."""

    def select(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, visible: torch.Tensor, scale: float, top: int
    ) -> Selection:
        raise NotImplementedError


class ExactTopK(Search):
    @property
    def label(self) -> str:
        return "exact top-k"

    def select(self, layer, q, k, visible, scale, top):
        keys = top_keys(q @ k.transpose(-1, -2) * scale, visible, top)
        size = q.shape[-1]
        return Selection(keys, size * (float(visible.sum()) * _heads(q) + float(keys.sum())))


# ------------------------------------------------------------------------------------------ FAVOR+
def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, dim) projections: blocks of `dim` orthogonal directions, each row scaled to the norm of an
    independent Gaussian vector, so every row is marginally N(0, I) while rows of a block are orthogonal."""
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        basis, triangle = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        # Q from a QR decomposition is uniformly distributed only once its column signs follow R's diagonal;
        # without this the directions, and so the estimates, are biased.
        blocks.append((basis * torch.sign(torch.diagonal(triangle))).T)
    norms = torch.randn(rows, dim, generator=generator, dtype=torch.float64).norm(dim=-1, keepdim=True)
    return torch.cat(blocks)[:rows] * norms


def log_features(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """log(phi(x) sqrt(m)) = omega x - |x|^2 / 2 for x (..., D), omega (..., m, D)."""
    return x @ omega.transpose(-1, -2) - x.pow(2).sum(-1, keepdim=True) / 2


def positive_features(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """phi(x) = exp(omega x - |x|^2 / 2) / sqrt(m): positive, and phi(x).phi(y) is an unbiased estimate of
    exp(x.y) when the rows of omega are N(0, I)."""
    return torch.exp(log_features(x, omega)) / math.sqrt(omega.shape[-2])


def favor_scores(q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor, scale: float) -> torch.Tensor:
    """The FAVOR+ estimate of exp(q.k * scale), (B, H, Tq, Tk), up to a positive factor per query.

    Computed in float64 with each query's features divided by their largest and the keys' by theirs
    (the usual stabilisation): the factors are common to a query's row, so its ranking is unchanged,
    and nothing overflows.
    """
    root = math.sqrt(scale)
    q, k = q.double() * root, k.double() * root
    log_q, log_k = log_features(q, omega), log_features(k, omega)
    phi_q = torch.exp(log_q - log_q.amax(-1, keepdim=True))
    phi_k = torch.exp(log_k - log_k.amax((-2, -1), keepdim=True))
    return phi_q @ phi_k.transpose(-1, -2)


@dataclass
class Favor(Search):
    """Keys ranked by the FAVOR+ estimate with `features` random features per head (drawn once per layer)."""

    features: int
    seed: int = 0
    projections: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"FAVOR+ m={self.features}"

    def omega(self, layer: int, heads: int, size: int) -> torch.Tensor:
        if layer not in self.projections:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + layer)
            self.projections[layer] = torch.stack(
                [orthogonal_gaussian(self.features, size, generator) for _ in range(heads)]
            )[None]
        return self.projections[layer]

    def select(self, layer, q, k, visible, scale, top):
        omega = self.omega(layer, q.shape[1], q.shape[-1]).to(q.device)
        keys = top_keys(favor_scores(q, k, omega, scale), visible, top)
        m, size = self.features, q.shape[-1]
        n_queries, n_keys = q.shape[2], k.shape[2]
        cost = (m * size * (n_queries + n_keys) + m * float(visible.sum())) * _heads(q) + 2 * size * float(keys.sum())
        return Selection(keys, cost)


# ------------------------------------------------------------------------------------------ k-means
def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the centroid (..., C, D) nearest to each row of x (..., M, D) in Euclidean distance."""
    distance = centroids.pow(2).sum(-1).unsqueeze(-2) - 2 * x @ centroids.transpose(-1, -2)
    return distance.argmin(-1)


def kmeans(x: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Centroids (H, C, D) of the points x (H, M, D) per head: k-means++ seeding, then Lloyd iterations
    (a cluster that loses all its points keeps its centroid)."""
    heads, points, _ = x.shape
    rows = torch.arange(heads)
    chosen = [torch.randint(points, (heads,), generator=generator)]
    for _ in range(1, clusters):
        centres = torch.stack([x[rows, index] for index in chosen], dim=1)
        squared = (x[:, :, None] - centres[:, None]).pow(2).sum(-1).amin(-1)
        chosen.append(torch.multinomial(squared + 1e-12, 1, generator=generator)[:, 0])
    centroids = torch.stack([x[rows, index] for index in chosen], dim=1)
    for _ in range(iterations):
        members = F.one_hot(nearest(x, centroids), clusters).to(x.dtype)
        counts = members.sum(1)[..., None]
        sums = members.transpose(1, 2) @ x
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


@dataclass
class KMeansBuckets(Search):
    """Keys bucketed by k-means centroids; each query visits its best `probes` buckets (more while they
    hold fewer than `top` visible keys) and keeps the `top` best exact scores among their keys."""

    clusters: int
    probes: int
    iterations: int = 20
    seed: int = 0
    centroids: dict = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"k-means C={self.clusters} b={self.probes}"

    def fit(self, layer: int, keys: torch.Tensor) -> None:
        """Fit the layer's centroids, unless they are there (searches that differ only in `probes` may share
        one `centroids` dict and fit once)."""
        if layer not in self.centroids:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + layer)
            self.centroids[layer] = kmeans(keys.float(), self.clusters, self.iterations, generator)

    def candidates(self, layer: int, q: torch.Tensor, k: torch.Tensor, visible: torch.Tensor, top: int) -> torch.Tensor:
        """(B, H, Tq, Tk) boolean: the visible keys in the buckets each query visits."""
        if layer not in self.centroids:
            raise RuntimeError(f"{self.label}: layer {layer} has no centroids; call fit first")
        centroids = self.centroids[layer].to(q.device, q.dtype)
        bucket = nearest(k, centroids)  # (B, H, Tk)
        order = (q @ centroids.transpose(-1, -2)).argsort(-1, descending=True)  # (B, H, Tq, C) best first
        rank = order.argsort(-1)  # bucket -> its rank per query
        members = F.one_hot(bucket, self.clusters).to(q.dtype)
        counts = visible.to(q.dtype) @ members  # visible keys per bucket
        found = counts.gather(-1, order).cumsum(-1)  # by rank
        need = visible.sum(-1).clamp(max=top).to(q.dtype)  # (Tq,)
        short = (found < need[:, None]).sum(-1)  # buckets that do not yet suffice
        visits = (short + 1).clamp(min=self.probes, max=self.clusters)
        key_rank = rank.gather(-1, bucket[:, :, None, :].expand(-1, -1, q.shape[2], -1))
        return (key_rank < visits[..., None]) & visible

    def select(self, layer, q, k, visible, scale, top):
        found = self.candidates(layer, q, k, visible, top)
        keys = top_keys(q @ k.transpose(-1, -2) * scale, found, top)
        size, n_queries, n_keys = q.shape[-1], q.shape[2], k.shape[2]
        cost = self.clusters * size * (n_queries + n_keys) * _heads(q) + size * (float(found.sum()) + float(keys.sum()))
        return Selection(keys, cost)


# ------------------------------------------------------------------------------------------ measures
def recall_at_k(retrieved: torch.Tensor, true: torch.Tensor, rows: torch.Tensor) -> float:
    """Mean over the queries in `rows` of |retrieved & true| / |true|."""
    hit = (retrieved & true).sum(-1) / true.sum(-1).clamp(min=1)
    return float(hit[..., rows].mean())


def mass_captured(retrieved: torch.Tensor, weights: torch.Tensor, kept: torch.Tensor, rows: torch.Tensor) -> float:
    """Mean over the queries in `rows` of the share of a query's total weight that falls on the retrieved
    keys plus `kept` (B, H, Tq), weight on columns every query keeps (key slots)."""
    total = weights.sum(-1) + kept
    share = ((weights * retrieved).sum(-1) + kept) / total
    return float(share[..., rows].mean())


__all__ = [
    "ExactTopK",
    "Favor",
    "KMeansBuckets",
    "Search",
    "Selection",
    "dense_cost",
    "favor_scores",
    "kmeans",
    "mass_captured",
    "nearest",
    "orthogonal_gaussian",
    "positive_features",
    "recall_at_k",
    "top_keys",
]
