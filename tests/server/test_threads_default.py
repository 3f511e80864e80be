"""The default intra-op thread count: one per two usable cores on CPU, the setting when given."""

from __future__ import annotations

from pathlib import Path

from server import settings as settings_module
from server.settings import Settings, usable_cores


def test_one_thread_per_two_usable_cores_on_cpu(monkeypatch):
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 2)
    assert Settings().resolved_threads("cpu") == 1
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 16)
    assert Settings().resolved_threads("cpu") == 8
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 1)
    assert Settings().resolved_threads("cpu") == 1
    assert Settings(torch_threads=3).resolved_threads("cpu") == 3
    assert Settings().resolved_threads("cuda") is None


def test_a_cgroup_quota_lowers_the_usable_cores(monkeypatch):
    real = Path.read_text

    def fake(path: Path, *args: object, **kwargs: object) -> str:
        if str(path) == "/sys/fs/cgroup/cpu.max":
            return "150000 100000\n"  # docker --cpus 1.5
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", fake)
    monkeypatch.setattr(settings_module.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert usable_cores() == 2  # 16 cores allowed, a 1.5-CPU quota: ceil(1.5)
