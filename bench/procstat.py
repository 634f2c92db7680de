"""Process facts from /proc: peak resident memory (VmHWM), CPU time, children, names."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    pid: int
    name: str
    hwm_kb: int
    rss_kb: int
    cpu_s: float
    """utime + stime of the process itself."""
    children_cpu_s: float
    """cutime + cstime: CPU of children it has waited for (Postfix's master reaps its daemons)."""
    pss_kb: int = 0
    """Proportional set size now: shared pages divided among the processes sharing them."""


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def _status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _kb(value: str | None) -> int:
    return int(value.split()[0]) if value else 0


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    return []


def sample(pid: int, name: str | None = None) -> ProcSample | None:
    """A snapshot of ``pid``; None when it is gone."""
    try:
        status = _status(pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is state (field 3 of stat); utime..cstime are fields 14..17
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ProcSample(
        pid=pid,
        name=name or status.get("Name", str(pid)),
        hwm_kb=_kb(status.get("VmHWM")),
        rss_kb=_kb(status.get("VmRSS")),
        cpu_s=(utime + stime) / TICKS,
        children_cpu_s=(cutime + cstime) / TICKS,
        pss_kb=_pss(pid),
    )


def _pss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return _kb(line.split(":", 1)[1].strip())
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        return []
    return found


def find_by_comm(comm: str) -> list[int]:
    """Pids whose /proc/<pid>/comm equals ``comm`` (e.g. beam.smp, redis-server)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
    return pids


def service_name(pid: int) -> str:
    """``ingress[0]`` for a ``mailmoat_cli.main run ingress --worker 0`` process, else its comm."""
    args = cmdline(pid)
    if "run" in args:
        index = args.index("run")
        if index + 1 < len(args):
            worker = args[args.index("--worker") + 1] if "--worker" in args else "0"
            return f"{args[index + 1]}[{worker}]"
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return str(pid)
