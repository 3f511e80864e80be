"""Drive an Isaac Sim articulation with plans from the planning server.

Run it with Isaac Sim's Python, after installing the client package into it
once (see docs/isaac_sim.md):

    ./python.sh -m pip install /path/to/repo/clients/python
    ./python.sh /path/to/repo/client_examples/isaac_sim_client.py --url http://127.0.0.1:8000 \
        --usd scene.usd --camera /World/Camera --robot /World/Robot \
        --goal goal.png --goal-proprio 0.1,0.2 --model-steps 50

Everything Isaac-specific is in ``main`` and in the adapters it uses
(``wm_client.isaac``: ``IsaacCamera``, ``ArticulationRobot``; Isaac Lab's
``TiledCameraSource`` is there too); the loop itself
(``wm_client.control_loop``) knows nothing of Isaac and is tested with a fake
camera and robot against a real server. The model's raw action is taken to be
what the training data recorded for this robot: joint position targets
(``--action-mode absolute``) or their change per env step (``delta``);
proprio is the articulation's joint positions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

try:
    from wm_client import ControlLoop, ControlLoopError, LoopConfig, PlanningClient
    from wm_client.isaac import ArticulationRobot, IsaacCamera
except ModuleNotFoundError as exc:
    if exc.name != "wm_client" or __name__ != "__main__":
        raise
    sys.exit("wm_client is not installed in this Python; install it once with "
             "`./python.sh -m pip install /path/to/repo/clients/python` (docs/isaac_sim.md)")

__all__ = ["main"]

log = logging.getLogger("isaac_sim_client")


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="planning server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--api-key", help="the server's API key, if it requires one")
    ap.add_argument("--usd", help="stage to open; omit to use the stage already loaded")
    ap.add_argument("--camera", required=True, help="camera prim path, e.g. /World/Camera")
    ap.add_argument("--resolution", default="64,64", help="camera W,H; render at the model's image_size")
    ap.add_argument("--robot", required=True, help="articulation prim path, e.g. /World/Robot")
    ap.add_argument("--joints", help="comma-separated joint indices forming proprio and actions (default: all)")
    ap.add_argument("--action-mode", choices=["absolute", "delta"], default="absolute")
    ap.add_argument("--goal", required=True, help="goal image (PNG/JPEG) rendered from the same camera")
    ap.add_argument("--goal-proprio", help="comma-separated goal joint positions (if the model has proprio)")
    ap.add_argument("--model-steps", type=int, default=50)
    ap.add_argument("--execute", type=int, default=1, help="model steps executed between replans")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", choices=["sync", "async", "hold"], default="sync",
                    help="sync: the sim waits for each plan; async: plan while the robot moves at --control-hz, "
                    "latency-compensated (docs/realtime.md); hold: real time, holding still while planning")
    ap.add_argument("--control-hz", type=float, help="env actions per second in async/hold mode (e.g. 10-30)")
    ap.add_argument("--planner", type=json.loads, help='planner settings as JSON, e.g. \'{"method": "icem", "icem": {"samples": 200}}\'')
    ap.add_argument("--json", action="store_true", help="send JSON instead of msgpack")
    ap.add_argument("--headless", action=argparse.BooleanOptionalAction, default=True)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SimulationApp must exist before any other isaacsim/omni import.
    from isaacsim import SimulationApp

    app = SimulationApp({"headless": args.headless})
    try:
        from isaacsim.core.api import World
        from isaacsim.core.prims import SingleArticulation
        from isaacsim.core.utils.stage import open_stage
        from isaacsim.sensors.camera import Camera
        from PIL import Image

        if args.usd:
            open_stage(args.usd)
        world = World(stage_units_in_meters=1.0)
        width, height = (int(v) for v in args.resolution.split(","))
        camera = Camera(prim_path=args.camera, resolution=(width, height))
        articulation = SingleArticulation(prim_path=args.robot)
        world.reset()
        camera.initialize()
        articulation.initialize()
        joints = None if args.joints is None else [int(j) for j in args.joints.split(",")]

        goal = np.asarray(Image.open(args.goal).convert("RGB"))
        config = LoopConfig(model_steps=args.model_steps, execute=args.execute, seed=args.seed, planner=args.planner,
                            mode=args.mode, control_hz=args.control_hz)
        with PlanningClient(args.url, api_key=args.api_key, use_msgpack=not args.json) as client:
            client.wait_ready(timeout=120)
            loop = ControlLoop(
                client, IsaacCamera(camera), ArticulationRobot(articulation, joints, args.action_mode),
                step=lambda: world.step(render=True), goal_frame=goal, goal_proprio=_floats(args.goal_proprio),
                config=config)
            try:
                report = loop.run()
            except ControlLoopError as exc:
                log.error("%s", exc)
                return 1
            finally:
                loop.close()
        print(json.dumps({"model_steps": report.model_steps, "plans": report.plans, "replans": report.replans,
                          "skipped_frames": report.skipped_frames, "retries": report.retries,
                          "errors": dict(report.errors),
                          "plan_ms_p50": float(np.median(report.plan_ms)) if report.plan_ms else None}))
        return 0
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
