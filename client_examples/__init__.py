"""Clients of the planning server, HTTP only: they import wm_client, numpy and envs, never torch or the planner."""
