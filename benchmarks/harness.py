"""The benchmark harness: command line, planner settings, servers, the machine, one result format.

A benchmark is a short script over this module::

    args = harness.parser("server_load", __doc__).parse_args(argv)
    result = harness.Result("server_load", args)         # records the machine (load before)
    with harness.Server(model, threads=1) as server:     # python -m server on 127.0.0.1, a free port
        result.add({...})                                # one row per measured thing
    return result.finish({...})                          # summary; load after; stdout + --out

Every result is one JSON object: ``benchmark``, ``machine`` (CPU model, cores,
torch version and threads, device, load average before and after, git
commit), ``settings`` (the command line), ``rows`` and ``summary``. It is
printed as one line on stdout and, with ``--out``, written to a file after
every row (a long run leaves what it measured). Progress goes to stderr.
`read_rows` reads results back for tables and plots (and the JSON-lines
files of earlier runs under docs/benchmarks/).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import httpx
import numpy as np
import torch

from benchmarks.problems import ROOT, default_arch, random_model
from models import DEFAULT_MODEL_PATH, WorldModel
from planning import PlannerConfig
from planning.config import spread

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
log = logging.getLogger("benchmarks")


# Command line ----------------------------------------------------------------------
def parser(name: str, doc: str | None, *, threads: int = 1, model: bool = True,
           quick: bool = True) -> argparse.ArgumentParser:
    """The flags benchmarks share: --out, --threads and, where they mean something, --quick and --model."""
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if quick:
        ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script in seconds, measures little")
    ap.add_argument("--out", type=Path, help="also write the result JSON here (rewritten after every row)")
    ap.add_argument("--threads", type=int, default=threads, help="torch intra-op threads (1 on a shared box)")
    if model:
        ap.add_argument("--model", help="model artifact (default: models/default/wall.pt, runs/wall/model.pt)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return ap


def set_threads(n: int) -> int:
    torch.set_num_threads(n)
    return torch.get_num_threads()


# Planner settings --------------------------------------------------------------------
# Every benchmark builds its planner settings through these two functions, so that a
# change of the planner config's names touches this block, not thirteen scripts.
def budget(samples: int, iterations: int, elites: int | None = None, min_iterations: int | None = None,
           **more: Any) -> dict[str, Any]:
    """A planner budget as overrides (`PlannerConfig.updated`, also valid as a request's `planner`):
    `samples` per iteration for every sampling solver, at most `iterations`, elites 10% of the
    samples unless given, and, if given, the iterations before early stopping may fire; `more`
    (driver settings, or a solver's section) on top."""
    out: dict[str, Any] = {"max_iterations": iterations,
                           **spread({"samples": samples, "elites": elites if elites is not None else max(1, samples // 10)})}
    if min_iterations is not None:
        out["min_iterations"] = min(iterations, min_iterations)
    for key, value in more.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and key in out else value
    return out


def planner(base: WorldModel | PlannerConfig | None = None, device: str = "cpu", **overrides: Any) -> PlannerConfig:
    """The planner config a benchmark plans with: the server's for a model on `device`
    (its preset plus the artifact's recommendations), a given config, or the paper's
    settings (None); `overrides` (config fields, e.g. from `budget`) on top."""
    if isinstance(base, PlannerConfig):
        return base.updated(overrides)
    return (PlannerConfig.paper() if base is None else PlannerConfig.for_model(base, device)).updated(overrides)


# Models ---------------------------------------------------------------------------------
def find_model(explicit: str | Path | None) -> Path | None:
    """--model, else the shipped default, else the training run's output; None if none exists."""
    candidates = [Path(explicit)] if explicit else [DEFAULT_MODEL_PATH, ROOT / "runs" / "wall" / "model.pt"]
    return next((p for p in candidates if p.is_file()), None)


def wall_model(explicit: str | Path | None) -> Path:
    """A trained wall model, or exit saying how to get one."""
    path = find_model(explicit)
    if path is None:
        raise SystemExit("no wall model found (models/default/wall.pt); train one with scripts/train_default.sh "
                         "or pass --model PATH")
    return path


def server_model(explicit: str | None, quick: bool, folder: Path) -> tuple[Path, str]:
    """(artifact, label) for a server benchmark: the tiny test model with --quick, else the
    wall model, else the default architecture with random weights (said in the label)."""
    from models import save_model
    from models.testing import save_tiny_model

    if quick:
        return save_tiny_model(folder / "tiny.pt"), "tiny random model (--quick)"
    found = find_model(explicit)
    if found is not None:
        return found, str(found)
    path = save_model(random_model(default_arch()), folder / "default-arch-random.pt",
                      metadata={"kind": "benchmark stand-in: default architecture, random weights"})
    return path, "default architecture (configs/wall.json) with RANDOM weights: no trained model found"


# Servers --------------------------------------------------------------------------------
def require_local(url: str) -> str:
    host = urlparse(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"--url must be on localhost ({sorted(LOCAL_HOSTS)}); got {host!r}")
    return url


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m server` (replicas=0) or `python -m server.ray --replicas N` on 127.0.0.1 and a
    free port, ready when /health says so for every replica; stopped by its own pid (Ray: the
    process group it leads) on `stop` or when the `with` block ends.

    threads: the server's --torch-threads (None: not passed, the server's own default);
    options: more `python -m server` flags; checkout: run another checkout's server (e.g. a git
    worktree of the commit before a change) with this Python, instead of this one's.
    """

    def __init__(self, model: Path, *, threads: int | None = 1, replicas: int = 0, device: str = "cpu",
                 options: Iterable[str] = (), ready_timeout: float = 180.0, checkout: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.threads, self.replicas = threads, replicas
        cmd = [sys.executable, "-m", "server.ray" if replicas else "server", "--model", str(model),
               "--host", "127.0.0.1", "--port", str(self.port), "--device", device, "--log-level", "warning",
               *(["--torch-threads", str(threads)] if threads is not None else []), *options]
        if replicas:
            cmd += ["--replicas", str(replicas), "--num-cpus", str(round(1.0 / replicas, 2))]
        self._log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill and block the server
        root = Path(checkout) if checkout is not None else ROOT
        env = {**os.environ, "PYTHONPATH": str(root)} if checkout is not None else None
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=bool(replicas))
        self.pid = self.proc.pid
        try:
            self.ready_seconds = self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> float:
        """Seconds until every replica answered /health with status ok (Ray: 404 until deployed)."""
        t0 = time.monotonic()
        ready: set[str] = set()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while len(ready) < max(1, self.replicas):
                if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                    self._log.seek(0)
                    tail = self._log.read()[-2000:]
                    raise RuntimeError(f"the server did not get ready ({len(ready)} of {max(1, self.replicas)} "
                                       f"replicas; exit code {self.proc.poll()}):\n{tail}")
                try:
                    body = http.get("/health").json()
                    if body.get("status") == "ok":
                        ready.add(str(body.get("replica")))
                except (httpx.HTTPError, ValueError):
                    pass  # not up yet
                time.sleep(0.2)
        return time.monotonic() - t0

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> dict[str, Any]:
        """GET /health or /stats as a dict."""
        r = httpx.get(self.url + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def rss(self) -> int | None:
        """The server process's resident memory in bytes (one process: the whole server)."""
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return pages * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            signal_ = (lambda sig: os.killpg(self.pid, sig)) if self.replicas else self.proc.send_signal
            try:
                signal_(15)
                self.proc.wait(timeout=60 if self.replicas else 30)
            except subprocess.TimeoutExpired:
                signal_(9)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


# The machine -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() + ("+dirty" if dirty else "")) or None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a figure depends on: CPU (and the vector ISA torch's kernels use on it), cores, torch and its
    threads, device, load, commit."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "logical_cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "device": device, "gpu": gpu,
            "load_average_before": load_average(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "git_commit": _git_commit(), "python": platform.python_version()}


def measure_peak(size: int = 2048, repeats: int = 5, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """A size^3 matmul's FLOP/s on `device` in `dtype`: best and median over wall time,
    and (CPU) the best over this process's CPU time per thread, which a shared machine's
    other work does not count against."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.mm(a, b)  # warm-up: threads, caches, kernels
    sync()
    rates, cpu_rates = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        sync()
        rates.append(2 * size ** 3 / (time.perf_counter() - t0))
        cpu_rates.append(2 * size ** 3 / max((time.process_time() - c0) / torch.get_num_threads(), 1e-9))
    return {"peak_flops": max(rates), "median_flops": statistics.median(rates), "size": size,
            "peak_flops_cpu_time": max(cpu_rates)}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99 and min of durations given in seconds, in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "min_ms": None}
    ms = np.asarray(seconds) * 1000.0
    return {"n": len(ms), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
            "min_ms": round(float(ms.min()), 2)}


# One result format ---------------------------------------------------------------------------
class Result:
    """One benchmark run: machine, settings, rows, summary; printed and written as one JSON object.
    Sets this process's torch threads from the settings' `threads` first, so the record is true."""

    def __init__(self, benchmark: str, args: argparse.Namespace | dict[str, Any], device: str = "cpu") -> None:
        settings = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
        if settings.get("threads"):
            set_threads(int(settings["threads"]))
        self.out: Path | None = settings.get("out")
        self.data: dict[str, Any] = {"benchmark": benchmark, "machine": machine(device),
                                     "settings": {k: _plain(v) for k, v in settings.items()},
                                     "rows": [], "summary": {}}

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        log.info("%s: %s", self.data["benchmark"], json.dumps(row, default=_plain)[:300])
        self._write()
        return row

    def finish(self, summary: dict[str, Any] | None = None) -> int:
        """Record the summary and the load after; print the result on stdout; exit status 0."""
        self.data["summary"] = summary or {}
        self.data["machine"]["load_average_after"] = load_average()
        self._write()
        print(json.dumps(self.data, default=_plain), flush=True)
        return 0

    def _write(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=_plain) + "\n")
            tmp.replace(self.out)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def read(path: str | Path) -> dict[str, Any]:
    """One result file."""
    return json.loads(Path(path).read_text())


def read_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of result files; a JSON-lines file (earlier runs) gives one row per line."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        text = Path(p).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # JSON lines
            rows += [json.loads(line) for line in text.splitlines() if line.strip()]
            continue
        rows += data["rows"] if isinstance(data, dict) and "rows" in data else [data]
    return rows
