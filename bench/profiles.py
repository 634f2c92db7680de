"""py-spy on running service processes, and a summary of where their CPU time goes.

``start`` attaches ``py-spy record`` (speedscope output, non-blocking sampling) to each process;
``stop`` ends the recordings and reads them back: own time by function and by package, and
inclusive time by package (a sample counts for every package on its stack).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SITE = re.compile(r"(?:site|dist)-packages/(.+)$")
STDLIB = re.compile(r"/lib/python3\.\d+/(.+)$")
ENTRY_POINTS = {"<module>", "main", "run_one", "run_service"}
REPO_PKG = re.compile(r"/(services/[a-z_]+|libs/[a-z]+|cli|bench)/(.+)$")


@dataclass
class Spy:
    service: str
    proc: subprocess.Popen
    path: Path


def py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else (shutil.which("py-spy") or "py-spy")


def start(pids: dict[str, int], outdir: Path, rate: int = 100) -> list[Spy]:
    outdir.mkdir(parents=True, exist_ok=True)
    spies = []
    for service, pid in sorted(pids.items()):
        safe = re.sub(r"[^a-z0-9_]+", "-", service.lower()).strip("-")
        path = outdir / f"profile-{safe}.speedscope.json"
        proc = subprocess.Popen(
            [py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
             "--format", "speedscope", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        spies.append(Spy(service, proc, path))
    return spies


def stop(spies: list[Spy], timeout: float = 60) -> dict[str, dict]:
    """End every recording (SIGINT makes py-spy write its file) and summarise each."""
    for spy in spies:
        if spy.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                spy.proc.send_signal(signal.SIGINT)
    out: dict[str, dict] = {}
    for spy in spies:
        try:
            spy.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            spy.proc.kill()
            spy.proc.wait(timeout=10)
        if spy.path.exists():
            out[spy.service] = summarise(json.loads(spy.path.read_text())) | {"file": str(spy.path)}
        else:
            err = spy.proc.stderr.read() if spy.proc.stderr else ""
            out[spy.service] = {"samples": 0, "file": f"(none: {err.strip()[-300:]})", "self_functions": [],
                                "self_packages": [], "incl_packages": [], "incl_mailmoat_functions": []}
    return out


def package_of(path: str) -> str:
    """A short owner for a source file: a PyPI package, a repo package, or stdlib:<module>."""
    if m := SITE.search(path):
        return m.group(1).split("/", 1)[0].removesuffix(".py")
    if m := REPO_PKG.search(path):
        return m.group(1) if m.group(1) == "bench" else "mailmoat_" + m.group(1).rsplit("/", 1)[-1]
    if m := STDLIB.search(path):
        return "stdlib:" + m.group(1).split("/", 1)[0].removesuffix(".py")
    return path if path.startswith("<") else "other"


def short_file(path: str) -> str:
    for pattern in (SITE, REPO_PKG, STDLIB):
        if m := pattern.search(path):
            return m.group(0).split("packages/", 1)[-1].lstrip("/").removeprefix("lib/")
    return path


def summarise(doc: dict, top: int = 25) -> dict:
    """Own time by function and package, inclusive time by package, as percentages of samples."""
    frames = doc["shared"]["frames"]
    own_fn: Counter[str] = Counter()
    own_pkg: Counter[str] = Counter()
    incl_pkg: Counter[str] = Counter()
    incl_own: Counter[str] = Counter()
    total = 0.0
    labels = [f"{f['name']} ({short_file(f.get('file') or '?')})" for f in frames]
    pkgs = [package_of(f.get("file") or "?") for f in frames]
    fn_labels = [lab.split(" (")[0] + f" ({pkgs[i]})" for i, lab in enumerate(labels)]
    for profile in doc.get("profiles", []):
        for stack, weight in zip(profile.get("samples", []), profile.get("weights", []), strict=False):
            if not stack:
                continue
            total += weight
            leaf = stack[-1]
            own_fn[labels[leaf]] += weight
            own_pkg[pkgs[leaf]] += weight
            for pkg in {pkgs[i] for i in stack}:
                incl_pkg[pkg] += weight
            for label in {fn_labels[i] for i in stack if pkgs[i].startswith("mailmoat")
                          and frames[i]["name"] not in ENTRY_POINTS}:
                incl_own[label] += weight

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []

    samples = sum(len(p.get("samples", [])) for p in doc.get("profiles", []))
    return {"samples": samples, "self_functions": pct(own_fn), "self_packages": pct(own_pkg),
            "incl_packages": pct(incl_pkg), "incl_mailmoat_functions": pct(incl_own)}


def main() -> int:
    """Summarise existing speedscope files: python bench/profiles.py bench/results/profile-*.json"""
    for name in sys.argv[1:]:
        summary = summarise(json.loads(Path(name).read_text()))
        print(f"{name}: {summary['samples']} samples")
        for fn, pct in summary["self_functions"][:20]:
            print(f"  {pct:5.1f}%  {fn}")
        print("  own by package: " + ", ".join(f"{p} {v}%" for p, v in summary["self_packages"][:10]))
        print("  inclusive by package: " + ", ".join(f"{p} {v}%" for p, v in summary["incl_packages"][:12]))
        print("  inclusive, mailmoat functions:")
        for fn, pct in summary["incl_mailmoat_functions"][:20]:
            print(f"  {pct:5.1f}%  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
