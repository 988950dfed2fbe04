"""Standard load tools (wrk, ab) and spawners (GNU parallel) from the system's packages: installed when missing,
run, and their output read.

The tools come from apt, not pip: when one is missing, the bench installs it itself if it runs as root on a
machine with apt-get (`apt-get install -y wrk apache2-utils parallel`); otherwise, or if that fails, the figures
that need it are reported as not measured, with the reason, and the rest of the run goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

# The command each figure needs, and the Debian package that provides it.
PACKAGES = {"wrk": "wrk", "ab": "apache2-utils", "parallel": "parallel", "xargs": "findutils"}
APT_TIMEOUT_SECONDS = 300.0
APT_LOCK_WAIT_SECONDS = 120
POST_JOBS_SCRIPT = Path(__file__).resolve().parent / "post_jobs.lua"
_missing_reasons: dict[str, str] = {}
_install_tried = False


def _apt_get(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}", *arguments],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_SECONDS,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=False,
    )


def _install(packages: list[str]) -> str | None:
    """apt-get install the packages (after an apt-get update if the lists do not know them); None or why not."""
    if os.geteuid() != 0:
        return "not root, so not installed by the bench"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    print(f"  installing {' '.join(packages)} with apt-get", flush=True)
    try:
        installed = _apt_get("install", "-y", "--no-install-recommends", *packages)
        if installed.returncode != 0:
            _apt_get("update")
            installed = _apt_get("install", "-y", "--no-install-recommends", *packages)
    except subprocess.TimeoutExpired:
        return f"apt-get did not finish within {APT_TIMEOUT_SECONDS:.0f} s"
    if installed.returncode != 0:
        last = (installed.stderr.strip().splitlines() or ["no output"])[-1]
        return f"apt-get install failed: {last[:120]}"
    return None


def _is_gnu_parallel(path: str) -> bool:
    """moreutils has a `parallel` of its own, with other options."""
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return version.stdout.startswith("GNU parallel")


def _present(command: str) -> bool:
    path = shutil.which(command)
    return path is not None and (command != "parallel" or _is_gnu_parallel(path))


def ensure_tools(commands: list[str]) -> dict[str, str]:
    """Install whatever of the tools is missing (all of them, once per run: one apt-get for every benchmark);
    returns, for each of `commands` still missing, why."""
    global _install_tried  # noqa: PLW0603  (one attempt per run, whichever benchmark asks first)
    if not _install_tried:
        _install_tried = True
        missing = [command for command in PACKAGES if not _present(command)]
        if missing:
            reason = _install(sorted({PACKAGES[command] for command in missing}))
            for command in missing:
                if not _present(command):
                    _missing_reasons[command] = reason or f"{PACKAGES[command]} installed, yet no usable {command}"
    return {command: _missing_reasons.get(command, "not installed") for command in commands if not _present(command)}


def not_measured(command: str, reason: str) -> str:
    return f"not measured: no {command} ({PACKAGES[command]}): {reason}"


# --- wrk ----------------------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_WRK_LATENCY = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)\s+([\d.]+)(us|ms|s|m|h)", re.M)
_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_WRK_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_TOTALS = re.compile(r"^post_jobs total created (\d+) failed (\d+) health (\d+)", re.M)
_WRK_THREAD_DONE = re.compile(r"^post_jobs thread \d+ done", re.M)


@dataclass(frozen=True)
class WrkReport:
    """What wrk printed: its own summary and the post_jobs script's totals."""

    requests: int
    seconds: float
    latency_mean_ms: float
    latency_max_ms: float
    socket_errors: int
    non_2xx_3xx: int
    created: int
    failed: int
    health: int


def parse_wrk(output: str) -> WrkReport:
    """wrk's summary with the post_jobs script's last line; ValueError if either is not there."""
    requests, latency, totals = _WRK_REQUESTS.search(output), _WRK_LATENCY.search(output), _WRK_TOTALS.search(output)
    if requests is None or latency is None or totals is None:
        raise ValueError(f"not the output of wrk with bench/post_jobs.lua: {output[-300:]!r}")
    errors = _WRK_SOCKET_ERRORS.search(output)
    non_2xx = _WRK_NON_2XX.search(output)
    return WrkReport(
        requests=int(requests[1]),
        seconds=float(requests[2]) * _UNITS[requests[3]] / 1000,
        latency_mean_ms=float(latency[1]) * _UNITS[latency[2]],
        latency_max_ms=float(latency[5]) * _UNITS[latency[6]],
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
        non_2xx_3xx=int(non_2xx[1]) if non_2xx else 0,
        created=int(totals[1]),
        failed=int(totals[2]),
        health=int(totals[3]),
    )


@dataclass
class _LineCollector:
    """Reads a process's stdout in a thread; tells when `wanted` lines matching `pattern` have come."""

    pattern: re.Pattern[str]
    wanted: int
    lines: list[str] = field(default_factory=list)
    complete: threading.Event = field(default_factory=threading.Event)

    def read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        seen = 0
        for line in process.stdout:
            self.lines.append(line)
            if self.pattern.match(line):
                seen += 1
                if seen >= self.wanted:
                    self.complete.set()
        self.complete.set()


def run_wrk(url: str, *, jobs: int, connections: int, threads: int, prefix: str, timeout: float) -> WrkReport:
    """POST exactly `jobs` jobs named `prefix-<thread>-<n>` with wrk; returns once every one is answered."""
    threads = max(1, min(threads, connections))
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(timeout)}s",
        "--timeout",
        "30s",
        "-s",
        str(POST_JOBS_SCRIPT),
        url,
        "--",
        str(jobs),
        str(threads),
        prefix,
    ]
    collector = _LineCollector(_WRK_THREAD_DONE, threads)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        reader = threading.Thread(target=collector.read, args=(process,), daemon=True)
        reader.start()
        collector.complete.wait(timeout)
        if process.poll() is None:  # wrk sleeps for its whole -d: interrupting it makes it print its summary now
            process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)
    output = "".join(collector.lines)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {output[-300:]!r}")
    return parse_wrk(output)


# --- ab -----------------------------------------------------------------------------------------------------------

_AB_FIELDS = {
    "complete": re.compile(r"^Complete requests:\s+(\d+)", re.M),
    "failed": re.compile(r"^Failed requests:\s+(\d+)", re.M),
    "keep_alive": re.compile(r"^Keep-Alive requests:\s+(\d+)", re.M),
    "seconds": re.compile(r"^Time taken for tests:\s+([\d.]+) seconds", re.M),
    "per_second": re.compile(r"^Requests per second:\s+([\d.]+)", re.M),
}
_AB_NON_2XX = re.compile(r"^Non-2xx responses:\s+(\d+)", re.M)
_AB_FAILURES = re.compile(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)")


@dataclass(frozen=True)
class AbReport:
    complete: int
    failed: int
    """Failures other than a body length different from the first answer's (every job id has its own length)."""
    keep_alive: int
    non_2xx: int
    seconds: float
    requests_per_second: float


def parse_ab(output: str) -> AbReport:
    found = {name: pattern.search(output) for name, pattern in _AB_FIELDS.items()}
    if any(match is None for match in found.values()):
        raise ValueError(f"not the output of ab: {output[-300:]!r}")
    values = {name: match[1] for name, match in found.items() if match is not None}
    failures = _AB_FAILURES.search(output)
    failed = int(values["failed"])
    if failures is not None:
        connect, receive, _length, exceptions = (int(count) for count in failures.groups())
        failed = connect + receive + exceptions
    non_2xx = _AB_NON_2XX.search(output)
    return AbReport(
        complete=int(values["complete"]),
        failed=failed,
        keep_alive=int(values["keep_alive"]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        seconds=float(values["seconds"]),
        requests_per_second=float(values["per_second"]),
    )


def run_ab(url: str, *, jobs: int, connections: int, body_file: Path, timeout: float) -> AbReport:
    """POST the body of `body_file` `jobs` times with `ab -k` (keep-alive) over `connections` connections."""
    command = ["ab", "-k", "-q", "-r", "-n", str(jobs), "-c", str(connections), "-s", "30"]
    command += ["-p", str(body_file), "-T", "application/json", url]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"ab exited with {finished.returncode}: {(finished.stdout + finished.stderr)[-300:]!r}")
    return parse_ab(finished.stdout)
