"""The bench's load tools: wrk with bench/post_jobs.lua, ab -k and GNU parallel, run for real when installed (each
test skips, saying so, when its tool is not), and their output read back; plus output each printed once."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import load_tools, spawn_peers

# Printed by wrk 4.1.0 (Debian bookworm) with bench/post_jobs.lua: 300 jobs over 2 threads, 32 connections, to the
# service (its lines "post_jobs ..." come from the script).
WRK_OUTPUT = """\
Running 5m test @ http://127.0.0.1:56267
  2 threads and 32 connections
post_jobs thread 2 done created 150 failed 0
post_jobs thread 1 done created 150 failed 0
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    76.13ms   42.85ms 170.79ms   70.16%
    Req/Sec   190.79     96.70   330.00     64.29%
  305 requests in 808.78ms, 180.24KB read
Requests/sec:    377.11
Transfer/sec:    222.85KB
post_jobs total created 300 failed 0 health 5
"""
# What wrk adds to its summary after socket errors and error statuses (its format strings).
WRK_ERROR_LINES = "  Socket errors: connect 0, read 1, write 0, timeout 2\n  Non-2xx or 3xx responses: 1\n"

# Printed by ab 2.3 (apache2-utils 2.4.71, Debian bookworm): 300 POST /jobs, -k, 32 connections, to the service
# (uvicorn closes HTTP/1.0 connections, hence no keep-alive requests).
AB_OUTPUT = """\
This is ApacheBench, Version 2.3 <$Revision$>
Copyright 1996 Adam Twiss, Zeus Technology Ltd, http://www.zeustech.net/
Licensed to The Apache Software Foundation, http://www.apache.org/

Benchmarking 127.0.0.1 (be patient).....done


Server Software:        uvicorn
Server Hostname:        127.0.0.1
Server Port:            56267

Document Path:          /jobs
Document Length:        426 bytes

Concurrency Level:      32
Time taken for tests:   2.709 seconds
Complete requests:      300
Failed requests:        0
Keep-Alive requests:    0
Total transferred:      187200 bytes
Total body sent:        60300
HTML transferred:       127800 bytes
Requests per second:    110.73 [#/sec] (mean)
Time per request:       288.984 [ms] (mean)
Time per request:       9.031 [ms] (mean, across all concurrent requests)
Transfer rate:          67.48 [Kbytes/sec] received
                        21.74 kb/s sent
                        89.21 kb/s total

Connection Times (ms)
              min  mean[+/-sd] median   max
Connect:        0    0   0.8      0       8
Processing:    44  267 131.8    218     596
Waiting:       42  260 127.4    216     596
Total:         44  267 131.6    218     597

Percentage of the requests served within a certain time (ms)
  50%    218
  66%    309
  75%    362
  80%    389
  90%    471
  95%    536
  98%    578
  99%    578
 100%    597 (longest request)
"""
# What ab prints when answers differ in length from the first one (every job id has its own length) ...
AB_LENGTH_FAILURES = "Failed requests:        290\n   (Connect: 0, Receive: 0, Length: 290, Exceptions: 0)"

PARALLEL_JOBLOG = """\
Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand
1\t:\t1764591234.123\t     0.004\t0\t0\t0\t0\t/bin/true 1
2\t:\t1764591234.125\t     0.003\t0\t0\t0\t0\t/bin/true 2
3\t:\t1764591234.127\t     0.004\t0\t0\t1\t0\t/bin/false 3
"""


def test_wrk_output_is_read_with_the_scripts_totals() -> None:
    report = load_tools.parse_wrk(WRK_OUTPUT)
    assert (report.created, report.failed, report.health) == (300, 0, 5)
    assert report.requests == 305
    assert report.seconds == pytest.approx(0.80878)
    assert report.latency_mean_ms == pytest.approx(76.13)
    assert report.latency_max_ms == pytest.approx(170.79)
    assert (report.socket_errors, report.non_2xx_3xx) == (0, 0)


def test_wrk_errors_are_counted() -> None:
    with_errors = WRK_OUTPUT.replace("Requests/sec:", WRK_ERROR_LINES + "Requests/sec:")
    report = load_tools.parse_wrk(with_errors)
    assert (report.socket_errors, report.non_2xx_3xx) == (3, 1)


def test_wrk_output_without_the_scripts_totals_is_refused() -> None:
    with pytest.raises(ValueError, match="post_jobs"):
        load_tools.parse_wrk(WRK_OUTPUT.replace("post_jobs total", "something else"))


def test_ab_output_is_read() -> None:
    report = load_tools.parse_ab(AB_OUTPUT)
    assert (report.complete, report.failed, report.keep_alive, report.non_2xx) == (300, 0, 0, 0)
    assert report.seconds == pytest.approx(2.709)
    assert report.requests_per_second == pytest.approx(110.73)


def test_ab_counts_a_different_body_length_as_no_failure_but_a_receive_error_as_one() -> None:
    lengths = AB_OUTPUT.replace("Failed requests:        0", AB_LENGTH_FAILURES)
    assert load_tools.parse_ab(lengths).failed == 0
    assert load_tools.parse_ab(lengths.replace("Receive: 0", "Receive: 4")).failed == 4


def test_output_of_something_else_is_refused() -> None:
    with pytest.raises(ValueError, match="not the output of ab"):
        load_tools.parse_ab(WRK_OUTPUT)


def test_parallel_joblog_counts_what_ran_and_what_succeeded() -> None:
    assert spawn_peers.read_joblog(PARALLEL_JOBLOG) == {"ran": 3, "distinct": 3, "succeeded": 2}


class _JobsHandler(BaseHTTPRequestHandler):
    """POST /jobs answers 201 with a job id of growing length, GET /health 200; keep-alive when asked."""

    protocol_version = "HTTP/1.1"
    server: _JobsServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.names.append(body["jobName"])
            number = len(self.server.names)
        self._answer(HTTPStatus.CREATED, {"jobId": f"job-{number}"})

    def do_GET(self) -> None:
        self._answer(HTTPStatus.OK, {"status": "ok"})

    def _answer(self, status: HTTPStatus, document: dict[str, str]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.request_version == "HTTP/1.0" and self.headers.get("Connection", "").lower() == "keep-alive":
            self.send_header("Connection", "keep-alive")  # what ab looks for before it reuses a connection
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        return


class _JobsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _JobsHandler)
        self.names: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def jobs_server() -> Iterator[_JobsServer]:
    server = _JobsServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _require(command: str) -> None:
    if shutil.which(command) is None:
        pytest.skip(f"{command} is not installed (apt-get install {load_tools.PACKAGES[command]})")


def test_wrk_posts_exactly_the_jobs_asked_each_named_apart(jobs_server: _JobsServer) -> None:
    _require("wrk")
    report = load_tools.run_wrk(jobs_server.url, jobs=101, connections=8, threads=2, prefix="t", timeout=60)
    assert report.created == 101
    assert report.failed == 0
    assert len(jobs_server.names) == 101
    assert len(set(jobs_server.names)) == 101
    assert all(name.startswith("t-") for name in jobs_server.names)


def test_ab_keeps_its_connections_alive_when_the_server_says_so(jobs_server: _JobsServer, tmp_path: Path) -> None:
    _require("ab")
    body = tmp_path / "body.json"
    body.write_text('{"jobName": "ab", "arguments": []}', encoding="utf-8")
    report = load_tools.run_ab(f"{jobs_server.url}/jobs", jobs=60, connections=4, body_file=body, timeout=60)
    assert (report.complete, report.failed, report.non_2xx) == (60, 0, 0)
    assert report.keep_alive == 60
    assert jobs_server.names == ["ab"] * 60


def test_gnu_parallel_runs_each_job_once() -> None:
    _require("parallel")
    if not load_tools._is_gnu_parallel(shutil.which("parallel") or "parallel"):
        pytest.skip("the parallel installed is not GNU parallel")
    result = spawn_peers.run_parallel("/bin/true", jobs=20, parallelism=4)
    assert result["joblog"] == {"ran": 20, "distinct": 20, "succeeded": 20}
    assert result["each_ran_once"]
    with pytest.raises(RuntimeError, match="exited with 3"):
        spawn_peers.run_parallel("/bin/false", jobs=3, parallelism=2)


def test_xargs_reports_a_failing_program() -> None:
    _require("xargs")
    assert spawn_peers.run_xargs("/bin/true", jobs=20, parallelism=4)["each_ran_once"]
    with pytest.raises(RuntimeError, match="exited with 123"):
        spawn_peers.run_xargs("/bin/false", jobs=3, parallelism=2)
