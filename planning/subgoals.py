"""Latent subgoal graph: far goals reached through states the model's training data visited.

A short-horizon planner with a latent-distance objective walks straight at
its goal; when an obstacle lies between (the wall task's wall), "straight"
is a local optimum the horizon cannot see past. The training data knows
better: its trajectories went round the obstacle. This graph is built once,
offline, from the encoded dataset (training/subgoals.py:
`python -m training.subgoals build`; this file holds the graph, `build_graph`
over given latents, and the search, and reads no dataset):

  nodes  dataset frames every `stride` env steps (one model step apart when
         stride = frameskip), encoded by the model: Latent (N, P, Dv), (N, Ep)
  edges  i -> i+1 inside an episode (a real transition: cost 1, one model
         step), and i <-> j for latents closer than `merge_radius` (the same
         state seen twice, in any episode: cost sqrt(d / step_scale), below 1,
         step_scale the median distance of a transition)

At plan time the planner aims at a node on the shortest path from the node
nearest the current latent to the node nearest the goal latent, `hops` model
steps along it; when the rest of the path is no longer than `hops`, at the
goal itself. The subgoal is recomputed from the current observation at every
(re)plan, so it needs no state across requests. Nothing here knows about any
environment: it is the search over latent subgoals of SPTM (Savinov et al.
2018) and SoRB (Eysenbach et al. 2019), with latent distance in place of a
learned reachability signal.

Distances are the planner's own "last" objective between latents:
MSE(visual) + alpha * MSE(proprio), alpha from the graph's build (the
model's recommended planner alpha).

The file is a dict of tensors and plain numbers, loaded with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from models import Latent

FORMAT = "wm-subgoal-graph"
FORMAT_VERSION = 1
_CACHED_GOALS = 32  # Dijkstra results kept (N floats and ints each)


class SubgoalGraphError(ValueError):
    """A subgoal graph file that cannot be used (corrupt, wrong format, wrong model)."""


@dataclass(frozen=True)
class SubgoalBuildConfig:
    """Args:
    stride: env steps between consecutive nodes of an episode; None = the
        model's frameskip, so an edge is one model step (the unit of `hops`).
    merge_quantile: the merge radius is this quantile of the latent distances
        of the dataset's one-step edges: pairs closer than that are "the same
        state" and joined both ways. Small, so a merge never jumps an obstacle
        a single model step could not cross.
    max_merges: merge edges kept per node (its nearest), bounding the graph.
    max_episodes: episodes used (the first ones); None = all.
    alpha: weight of the proprio term in the distance; None = the model's
        recommended planner alpha (else the planner default 0.1).
    """

    stride: int | None = None
    merge_quantile: float = 0.1
    max_merges: int = 8
    max_episodes: int | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.stride is not None and (isinstance(self.stride, bool) or self.stride < 1):
            raise ValueError(f"stride={self.stride!r}: must be an integer >= 1 or None")
        if not 0.0 < self.merge_quantile < 1.0:
            raise ValueError(f"merge_quantile={self.merge_quantile!r}: must be in (0, 1)")
        if self.max_merges < 0:
            raise ValueError(f"max_merges={self.max_merges!r}: must be >= 0")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes={self.max_episodes!r}: must be >= 1 or None")
        if self.alpha is not None and not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha={self.alpha!r}: must be a finite number >= 0 or None")


def latent_distance(a: Latent, b: Latent, alpha: float) -> torch.Tensor:
    """Pairwise planner distance. a: Latent (n, P, Dv), (n, Ep); b: (m, ...) -> (n, m).

    ||x - y||^2 = |x|^2 + |y|^2 - 2 x.y on flattened tokens, divided by the
    element count to be the MSE of `planning.objectives` ("last")."""
    def sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.flatten(1), y.flatten(1)  # (n, D), (m, D)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], y.shape[0])
        d = x.square().sum(1, keepdim=True) + y.square().sum(1) - 2.0 * x @ y.T
        return d.clamp_min(0.0) / x.shape[1]

    return sq(a.visual, b.visual) + alpha * sq(a.proprio, b.proprio)


def paired_distance(a: Latent, b: Latent, alpha: float) -> torch.Tensor:
    """Row-wise planner distance. a, b: Latent (n, P, Dv), (n, Ep) -> (n,)."""
    d = (a.visual - b.visual).square().flatten(1).mean(1)
    if a.proprio.shape[-1]:
        d = d + alpha * (a.proprio - b.proprio).square().mean(1)
    return d


class SubgoalGraph:
    """Nodes (latents) and weighted directed edges (CSR), queried at plan time.

    visual: (N, P, Dv); proprio: (N, Ep) node latents (stored fp16, used fp32).
    indptr (N + 1,), indices (E,), weights (E,): edges i -> indices[indptr[i]:indptr[i+1]].
    """

    def __init__(self, visual: torch.Tensor, proprio: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                 weights: torch.Tensor, alpha: float, model_id: str = "", info: dict[str, Any] | None = None) -> None:
        n = visual.shape[0]
        if visual.dim() != 3 or proprio.dim() != 2 or proprio.shape[0] != n:
            raise SubgoalGraphError(f"node latents have shapes {tuple(visual.shape)} and {tuple(proprio.shape)}; "
                                    "expected (N, P, Dv) and (N, Ep)")
        if n == 0:
            raise SubgoalGraphError("the graph has no nodes")
        if indptr.shape != (n + 1,) or indices.shape != weights.shape or int(indptr[-1]) != indices.shape[0]:
            raise SubgoalGraphError(f"edge arrays do not match {n} nodes (indptr {tuple(indptr.shape)}, "
                                    f"indices {tuple(indices.shape)}, weights {tuple(weights.shape)})")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
            raise SubgoalGraphError("edge indices point outside the node list")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise SubgoalGraphError("edge weights must be finite and >= 0")
        self.visual, self.proprio = visual.float(), proprio.float()
        self.alpha, self.model_id, self.info = float(alpha), model_id, dict(info or {})
        # Reversed graph: Dijkstra from the goal over it gives every node's distance *to* the goal
        # and, as predecessors, each node's next hop towards it.
        fwd = csr_matrix((weights.double().numpy(), indices.long().numpy(), indptr.long().numpy()), shape=(n, n))
        self._edges = (indptr.long(), indices.long(), weights.float())
        self._reverse = fwd.T.tocsr()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._nodes = self._embed(Latent(self.visual, self.proprio))  # (N, D)
        self._node_sq = self._nodes.square().sum(dim=1)  # (N,)
        self._lock = threading.Lock()

    @property
    def num_nodes(self) -> int:
        return int(self.visual.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self._edges[1].shape[0])

    def describe(self) -> dict[str, Any]:
        return {"nodes": self.num_nodes, "edges": self.num_edges, "alpha": self.alpha, **self.info}

    def _embed(self, z: Latent) -> torch.Tensor:
        """Latent (n, P, Dv), (n, Ep) -> (n, P*Dv + Ep), scaled so that the squared Euclidean
        distance of two rows is their `latent_distance`."""
        vis = z.visual.detach().cpu().float().flatten(1)
        pro = z.proprio.detach().cpu().float()
        parts = [vis / vis.shape[1] ** 0.5]
        if pro.shape[1]:
            parts.append(pro * (self.alpha / pro.shape[1]) ** 0.5)
        return torch.cat(parts, dim=1)

    def nearest(self, z: Latent) -> torch.Tensor:
        """z: Latent (B, P, Dv), (B, Ep) -> (B,) index of each one's nearest node: one (B, N) matmul
        against the nodes' precomputed embeddings (|x|^2 is the same for every node: left out)."""
        x = self._embed(z)  # (B, D)
        return (self._node_sq - 2.0 * x @ self._nodes.T).argmin(dim=1)

    def path(self, src: int, dst: int) -> tuple[list[int], list[float]] | None:
        """Shortest path src -> dst: node ids (src first) and the cost of reaching each; None when
        dst cannot be reached from src."""
        dist, pred = self._towards(dst)
        if not np.isfinite(dist[src]):
            return None
        nodes, costs = [src], [0.0]
        while nodes[-1] != dst:
            nodes.append(int(pred[nodes[-1]]))
            costs.append(float(dist[src] - dist[nodes[-1]]))
        return nodes, costs

    def _towards(self, dst: int) -> tuple[np.ndarray, np.ndarray]:
        """Every node's cost to reach dst and its next node on the way (N,), (N,): one Dijkstra over
        the reversed graph, O(E log N), kept for the last few goals (an MPC episode replans towards one
        goal many times)."""
        hit = self._cache.pop(dst, None)
        if hit is None:
            hit = dijkstra(self._reverse, indices=dst, return_predecessors=True)
        self._cache[dst] = hit
        while len(self._cache) > _CACHED_GOALS:
            self._cache.pop(next(iter(self._cache)))
        return hit

    def targets(self, z_obs: Latent, z_goal: Latent, hops: float) -> tuple[Latent, list[dict[str, Any]]]:
        """The latent each request should plan towards, and what was chosen.

        z_obs, z_goal: Latent (B, P, Dv), (B, Ep). For each request: the node
        `hops` model steps along the shortest path from the node nearest z_obs
        to the node nearest z_goal, or z_goal itself when the path is no longer
        than `hops` or there is none. Returns Latent (B, P, Dv), (B, Ep) on
        z_goal's device and, per request, {"subgoal": bool, "path_steps": float
        or None (no path), "node": int or None}."""
        src = self.nearest(z_obs).tolist()
        dst = self.nearest(z_goal).tolist()
        vis, pro, info = z_goal.visual.clone(), z_goal.proprio.clone(), []
        with self._lock:  # the cache is shared; Dijkstra itself is a few ms
            found = [self.path(s, d) for s, d in zip(src, dst)]
        for b, path in enumerate(found):
            if path is None or path[1][-1] <= hops:
                info.append({"subgoal": False, "path_steps": None if path is None else path[1][-1], "node": None})
                continue
            nodes, costs = path
            node = nodes[max(i for i, c in enumerate(costs) if c <= hops)]
            vis[b] = self.visual[node].to(vis)
            pro[b] = self.proprio[node].to(pro)
            info.append({"subgoal": True, "path_steps": costs[-1], "node": node})
        return Latent(vis, pro), info

    # Files ------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write atomically: tensors and plain values only (weights_only loadable)."""
        path = Path(path)
        indptr, indices, weights = self._edges
        blob = {"format": FORMAT, "version": FORMAT_VERSION, "alpha": self.alpha, "model_id": self.model_id,
                "info": self.info, "visual": self.visual.half(), "proprio": self.proprio.half(),
                "indptr": indptr.int(), "indices": indices.int(), "weights": weights.half()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "SubgoalGraph":
        """Read a graph written by `save`; SubgoalGraphError (naming the file) if it is not one."""
        path = Path(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one clear error
            raise SubgoalGraphError(f"{path}: not a readable subgoal graph ({type(exc).__name__}: {exc})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise SubgoalGraphError(f"{path}: not a subgoal graph (no format={FORMAT!r}); build one with "
                                    "`python -m training.subgoals build`")
        if blob.get("version") != FORMAT_VERSION:
            raise SubgoalGraphError(f"{path}: subgoal graph version {blob.get('version')!r}; this code reads "
                                    f"version {FORMAT_VERSION}")
        try:
            return cls(blob["visual"], blob["proprio"], blob["indptr"], blob["indices"], blob["weights"],
                       float(blob["alpha"]), str(blob.get("model_id", "")), blob.get("info") or {})
        except KeyError as exc:
            raise SubgoalGraphError(f"{path}: subgoal graph is missing {exc}") from None


def build_graph(node_latents: Latent, episode_ids: np.ndarray, cfg: SubgoalBuildConfig, alpha: float,
                model_id: str = "", info: dict[str, Any] | None = None, chunk: int = 2048) -> SubgoalGraph:
    """The graph over N node latents in episode order.

    node_latents: Latent (N, P, Dv), (N, Ep); episode_ids: (N,) int, equal for
    consecutive nodes of one episode (node i -> i+1 is a transition when both
    share an id)."""
    n = node_latents.visual.shape[0]
    ep = torch.as_tensor(episode_ids)
    z = Latent(node_latents.visual.float(), node_latents.proprio.float())
    same = (ep[1:] == ep[:-1]).nonzero().squeeze(1)  # (T,) i with i -> i+1 a transition
    if same.numel() == 0:
        raise ValueError("no two consecutive nodes share an episode: no transitions to build edges from")
    step_d = paired_distance(z.index(same), z.index(same + 1), alpha)  # (T,)
    radius = float(torch.quantile(step_d.double(), cfg.merge_quantile))
    scale = float(step_d.median())
    rows, cols, wts = [same], [same + 1], [torch.ones(same.numel())]
    k = min(cfg.max_merges + 1, n)
    for i in range(0, n, chunk):
        d = latent_distance(z.index(slice(i, i + chunk)), z, alpha)  # (c, N)
        vals, idx = d.topk(k, dim=1, largest=False)
        src = torch.arange(i, i + d.shape[0]).unsqueeze(1).expand_as(idx)
        keep = (vals <= radius) & (idx != src)
        r, c, v = src[keep], idx[keep], vals[keep]
        rows += [r, c]  # both ways: "the same state"
        cols += [c, r]
        # The distance is a squared one (MSE); its root grows with how far apart the states are, so a chain
        # of merges costs about what the transitions covering the same ground do, never a free teleport.
        cost = (v / scale).sqrt()
        wts += [cost, cost]
    r, c, w = torch.cat(rows), torch.cat(cols), torch.cat(wts).float()
    # Duplicate pairs keep their cheapest weight: sort by (row, col, weight), keep the first of each pair.
    order = torch.argsort(w, stable=True)
    r, c, w = r[order], c[order], w[order]
    order = torch.argsort(r * n + c, stable=True)
    r, c, w = r[order], c[order], w[order]
    first = torch.ones_like(r, dtype=torch.bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    r, c, w = r[first], c[first], w[first]
    indptr = torch.zeros(n + 1, dtype=torch.long)
    indptr[1:] = torch.bincount(r, minlength=n).cumsum(0)
    meta = {"merge_radius": radius, "step_scale": scale, "transitions": int(same.numel()), **(info or {})}
    return SubgoalGraph(z.visual, z.proprio, indptr, c, w, alpha, model_id, meta)


def default_path(model_path: str | Path) -> Path:
    """Where a model's graph lives by default: models/default/wall.pt -> models/default/wall.subgoals.pt."""
    p = Path(model_path)
    return p.with_name(p.stem + ".subgoals.pt")

