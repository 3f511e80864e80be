"""The latent subgoal graph: built from a tiny hand-made dataset, searched, saved and loaded safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models import Latent
from planning import PlannerConfig
from planning.subgoals import SubgoalBuildConfig, SubgoalGraph, SubgoalGraphError, build_graph


def _u_corridor() -> tuple[Latent, np.ndarray, list[tuple[int, int]]]:
    """Three episodes of unit steps around a wall between x=0 and x=2 (open only at y=4):
    up the left side, across the top, down the right side. Each episode ends by staying put
    one step, so the smallest transitions are 0 and only identical states merge.
    Latent: visual (N, 1, 2) = the (x, y) point, no proprio."""
    episodes = [
        [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 4)],
        [(0, 4), (1, 4), (2, 4), (2, 4)],
        [(2, 4), (2, 3), (2, 2), (2, 1), (2, 0), (2, 0)],
    ]
    points = [p for ep in episodes for p in ep]
    ids = np.concatenate([np.full(len(ep), e) for e, ep in enumerate(episodes)])
    visual = torch.tensor(points, dtype=torch.float32).view(-1, 1, 2)
    return Latent(visual, torch.zeros(len(points), 0)), ids, points


def _at(points: list[tuple[int, int]], xy: tuple[int, int]) -> Latent:
    return Latent(torch.tensor([xy], dtype=torch.float32).view(1, 1, 2), torch.zeros(1, 0))


@pytest.fixture
def corridor() -> tuple[SubgoalGraph, list[tuple[int, int]]]:
    z, ids, points = _u_corridor()
    return build_graph(z, ids, SubgoalBuildConfig(merge_quantile=0.05), alpha=0.0), points


def test_shortest_path_goes_round_the_wall_not_through_it(corridor):
    graph, points = corridor
    src, dst = int(graph.nearest(_at(points, (0, 0)))[0]), int(graph.nearest(_at(points, (2, 0)))[0])
    nodes, costs = graph.path(src, dst)
    walked = [points[n] for n in nodes]
    assert walked[0] == (0, 0) and walked[-1] == (2, 0)
    assert (1, 4) in walked  # through the opening
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) <= 1 for a, b in zip(walked, walked[1:]))  # never jumps the wall
    assert costs[-1] == pytest.approx(10.0)  # 4 up, 2 across, 4 down; merges of identical states are free


def test_the_subgoal_lies_hops_along_the_path_and_is_the_goal_when_near(corridor):
    graph, points = corridor
    target, info = graph.targets(_at(points, (0, 0)), _at(points, (2, 0)), hops=2)
    assert info[0]["subgoal"] is True and info[0]["path_steps"] == pytest.approx(10.0)
    assert target.visual.view(2).tolist() == [0.0, 2.0]  # 2 steps up, not towards (2, 0)
    # 2 steps from the goal along the path: plan towards the goal itself.
    goal = _at(points, (2, 0))
    target, info = graph.targets(_at(points, (2, 2)), goal, hops=2)
    assert info[0]["subgoal"] is False
    assert torch.equal(target.visual, goal.visual)


def test_edges_are_directed_and_an_unreachable_goal_is_planned_for_directly(corridor):
    graph, points = corridor
    src, dst = int(graph.nearest(_at(points, (2, 0)))[0]), int(graph.nearest(_at(points, (0, 0)))[0])
    assert graph.path(src, dst) is None  # the data only ever went the other way
    goal = _at(points, (0, 0))
    target, info = graph.targets(_at(points, (2, 0)), goal, hops=2)
    assert info[0] == {"subgoal": False, "path_steps": None, "node": None}
    assert torch.equal(target.visual, goal.visual)


def test_a_batch_gets_one_target_per_request(corridor):
    graph, points = corridor
    z_obs = Latent.cat([_at(points, (0, 0)), _at(points, (2, 2))])
    z_goal = Latent.cat([_at(points, (2, 0)), _at(points, (2, 0))])
    target, info = graph.targets(z_obs, z_goal, hops=2)
    assert target.visual.shape == (2, 1, 2)
    assert [i["subgoal"] for i in info] == [True, False]


def test_file_round_trip_loads_with_weights_only(corridor, tmp_path: Path):
    graph, points = corridor
    path = tmp_path / "g.subgoals.pt"
    graph.save(path)
    blob = torch.load(path, weights_only=True)  # tensors and plain values only
    assert blob["format"] == "wm-subgoal-graph"
    again = SubgoalGraph.load(path)
    assert again.num_nodes == graph.num_nodes and again.num_edges == graph.num_edges
    assert again.path(0, len(points) - 1) == graph.path(0, len(points) - 1)


def test_a_corrupt_or_foreign_file_gives_a_clear_error(corridor, tmp_path: Path):
    graph, _ = corridor
    path = tmp_path / "g.subgoals.pt"
    graph.save(path)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(SubgoalGraphError, match="not a readable subgoal graph"):
        SubgoalGraph.load(path)
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(SubgoalGraphError, match="not a subgoal graph"):
        SubgoalGraph.load(path)
    torch.save({"format": "wm-subgoal-graph", "version": 1, "alpha": 0.0}, path)
    with pytest.raises(SubgoalGraphError, match="missing"):
        SubgoalGraph.load(path)


def test_build_config_and_planner_config_name_bad_values():
    with pytest.raises(ValueError, match="merge_quantile=1.5"):
        SubgoalBuildConfig(merge_quantile=1.5)
    with pytest.raises(ValueError, match="subgoal_hops=0"):
        PlannerConfig(subgoal_hops=0)
    with pytest.raises(ValueError, match="subgoals=1"):
        PlannerConfig(subgoals=1)  # type: ignore[arg-type]
