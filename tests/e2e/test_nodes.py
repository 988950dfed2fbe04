"""End to end: several real servers on one PostgreSQL. Work is shared fairly and run once; a node lost, frozen or
cut off from the database has its jobs run again elsewhere within its lease and a few seconds, its own programs
ended first, and records nothing stale when it comes back; a job running on one node is cancelled and its output
read and followed through another.

Each job's program notes "start" and "done" lines in a file, so what really ran (and finished) is counted from the
programs themselves, not from what the service says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.cluster import TEST_LEASE_SECONDS, Cluster
from tests.support.jobs import wait_until_final
from tests.support.server import ServerProcess, ServerStarter, service_environment, wait_until
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

# A node is declared dead lease + margin after its last renewal; the rescuer looks every margin; a retry waits at
# most its backoff base; then a claim. Generous on a loaded machine.
RESCUE_SECONDS = TEST_LEASE_SECONDS + 6.0
LONG_JOB_SECONDS = 6.0
FINAL_SECONDS = 40.0
DEFAULT_POSTGRES_PORT = 5432


@pytest.fixture
def cluster(tmp_path: Path, database_url: str, start_server: ServerStarter) -> Cluster:
    return Cluster(tmp_path, database_url, start_server)


def _attempts_of(cluster: Cluster, job_ids: set[str]) -> list[dict[str, Any]]:
    return [row for row in cluster.attempts() if row["job_id"] in job_ids]


def _jobs_running_on(cluster: Cluster, node: str, count: int) -> list[str]:
    """Wait until `count` attempts run on `node` (their program started); their job ids."""

    def running() -> list[str] | None:
        starts, _ = cluster.runs()
        rows = [row for row in cluster.running_on(node) if (row["job_id"], row["attempt_number"]) in starts]
        return [row["job_id"] for row in rows] if len(rows) >= count else None

    return wait_until(running, timeout=20, message=lambda: f"{count} programs running on {node}")


def test_three_nodes_share_600_jobs_each_run_once_and_each_node_a_fair_share(cluster: Cluster) -> None:
    servers = [cluster.start_node(name) for name in ("node-a", "node-b", "node-c")]
    clients = [server.client() for server in servers]
    job_ids: list[str] = []
    lock = threading.Lock()

    def submit_through(client: httpx.Client, count: int, offset: int) -> None:
        for index in range(count):
            job_id = cluster.submit_one(client, 0.2, f"shared-{offset + index}")
            with lock:
                job_ids.append(job_id)

    threads = [
        threading.Thread(target=submit_through, args=(client, 200, 200 * index)) for index, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(job_ids)) == 600

    jobs = wait_until_final(clients[0], job_ids, timeout=90)
    assert {job["status"] for job in jobs.values()} == {"completed"}
    starts, ends = cluster.runs()
    assert starts == Counter({(job_id, 1): 1 for job_id in job_ids}), "every job ran exactly once"
    assert ends == starts
    per_node = Counter(row["node_id"] for row in cluster.attempts())
    assert sum(per_node.values()) == 600
    for name in ("node-a", "node-b", "node-c"):
        assert per_node[name] >= 600 * 0.2, f"{name} ran a fair share: {dict(per_node)}"

    listed = clients[1].get("/nodes").json()
    assert [(node["nodeId"], node["state"], node["running"]) for node in listed] == [
        ("node-a", "alive", 0),
        ("node-b", "alive", 0),
        ("node-c", "alive", 0),
    ]
    assert all(node["leaseUntil"] is not None and node["apiUrl"].startswith("http://") for node in listed)
    for client in clients:
        client.close()


def test_a_node_lost_with_its_programs_has_its_jobs_rerun_elsewhere_and_records_nothing_stale(
    cluster: Cluster,
) -> None:
    node_a = cluster.start_node("node-a", MAX_CONCURRENT_JOBS="5")
    cluster.start_node("node-b", MAX_CONCURRENT_JOBS="5")
    job_ids = cluster.submit(node_a, 10, LONG_JOB_SECONDS, "machine")
    on_b = _jobs_running_on(cluster, "node-b", 5)
    on_a = sorted(set(job_ids) - set(on_b))
    wait_until(lambda: len(cluster.running_on("node-a")) == 5 or None, timeout=20, message=lambda: "5 run on node-a")

    killed_at = time.monotonic()
    cluster.kill_node_and_its_programs("node-b")

    def rerun_elsewhere() -> bool | None:
        rows = _attempts_of(cluster, set(on_b))
        rerun = {row["job_id"] for row in rows if row["attempt_number"] == 2 and row["node_id"] == "node-a"}
        return rerun == set(on_b) or None

    wait_until(rerun_elsewhere, timeout=RESCUE_SECONDS + LONG_JOB_SECONDS, message=lambda: f"{cluster.attempts()}")
    # The rerun is claimed once node-a has a free slot: its own jobs end LONG_JOB_SECONDS after they started.
    lost = [row for row in _attempts_of(cluster, set(on_b)) if row["attempt_number"] == 1]
    assert {row["outcome"] for row in lost} == {"lost"}
    assert all("node 'node-b' stopped renewing its lease" in row["error"] for row in lost), lost
    assert all("node 'node-a' declared it dead" in row["error"] for row in lost)
    rescued_after = max(row["finished_at"].timestamp() for row in lost) - (time.time() - (time.monotonic() - killed_at))
    assert rescued_after < RESCUE_SECONDS, f"declared dead {rescued_after:.1f} s after the kill"

    with node_a.client() as client:
        jobs = wait_until_final(client, job_ids, timeout=FINAL_SECONDS)
    assert {job["status"] for job in jobs.values()} == {"completed"}
    for row in _attempts_of(cluster, set(on_a)):
        assert (row["attempt_number"], row["node_id"], row["outcome"]) == (1, "node-a", "succeeded"), row
    assert cluster.node_rows()["node-b"]["state"] == "dead"

    # Back again: it joins as alive, finds nothing running under its name and records nothing about the past.
    before = cluster.attempts()
    restarted = cluster.start_node("node-b", MAX_CONCURRENT_JOBS="5")
    assert "was declared dead by node-a" in wait_until(
        lambda: restarted.output() if "declared dead" in restarted.output() else None,
        timeout=10,
        message=restarted.output,
    )
    time.sleep(1.0)  # time enough for a stale write, were there one (the check is that nothing changed)
    assert cluster.attempts() == before
    assert cluster.node_rows()["node-b"]["state"] == "alive"
    _, ends = cluster.runs()
    assert all(ends[(job_id, 1)] == 0 and ends[(job_id, 2)] == 1 for job_id in on_b), "killed runs never finished"


def _jobmanager(server: ServerProcess, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The command line, pointed at `server`."""
    return subprocess.run(
        [sys.executable, "-m", "service", *arguments],
        env=service_environment(JOBMANAGER_URL=server.base_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_dead_node_is_forgotten_from_the_command_line_and_a_live_one_is_not(cluster: Cluster) -> None:
    node_a = cluster.start_node("node-a")
    cluster.start_node("node-b")
    cluster.kill_node_and_its_programs("node-b")
    wait_until(
        lambda: cluster.node_rows()["node-b"]["state"] == "dead" or None,
        timeout=RESCUE_SECONDS,
        message=lambda: f"node-b declared dead: {cluster.node_rows()}",
    )

    refused = _jobmanager(node_a, "nodes", "forget", "node-a")
    forgotten = _jobmanager(node_a, "nodes", "forget", "node-b")
    listed = json.loads(_jobmanager(node_a, "nodes", "--json").stdout)

    assert refused.returncode == 1
    assert "node-a" in refused.stderr
    assert "alive" in refused.stderr
    assert forgotten.returncode == 0, forgotten.stderr
    assert forgotten.stdout.strip() == "forgot node node-b: 0 running attempt(s) made lost, 0 job(s) to run again"
    assert [(node["nodeId"], node["state"]) for node in listed] == [("node-a", "alive")]


def _assert_taken_over_without_double_finishes(
    cluster: Cluster, job_ids: list[str], on_b: list[str], lost_rows: list[dict[str, Any]]
) -> None:
    with cluster.nodes["node-a"].client() as client:
        jobs = wait_until_final(client, job_ids, timeout=FINAL_SECONDS)
    assert {job["status"] for job in jobs.values()} == {"completed"}
    starts, ends = cluster.runs()
    finishes = Counter(job_id for job_id, _ in ends.elements())
    assert finishes == Counter(dict.fromkeys(job_ids, 1)), f"each program finished once: {finishes}"
    for job_id in on_b:
        assert ends[(job_id, 1)] == 0, f"{job_id}: node-b's run was ended before anyone reran it"
        assert starts[(job_id, 1)] == 1
    # Nothing node-b observed after it was declared dead was recorded over what the rescue wrote.
    now = {(row["job_id"], row["attempt_number"]): row for row in cluster.attempts()}
    for row in lost_rows:
        assert now[(row["job_id"], row["attempt_number"])] == row


def _outlast_the_programs(since: float) -> None:
    """Keep the node away until its programs would have finished had nothing ended them: a program the node's
    keeper failed to end would then finish beside its rerun."""
    time.sleep(max(0.0, since + LONG_JOB_SECONDS + 1.0 - time.monotonic()))


def _wait_until_taken_over(cluster: Cluster, on_b: list[str]) -> list[dict[str, Any]]:
    def lost() -> list[dict[str, Any]] | None:
        rows = [row for row in _attempts_of(cluster, set(on_b)) if row["attempt_number"] == 1]
        return rows if {row["outcome"] for row in rows} == {"lost"} else None

    rows = wait_until(lost, timeout=RESCUE_SECONDS, message=lambda: f"{cluster.attempts()}")
    assert cluster.node_rows()["node-b"]["state"] == "dead"
    return rows


def test_a_frozen_node_has_its_jobs_rerun_elsewhere_and_no_program_finishes_twice(cluster: Cluster) -> None:
    cluster.start_node("node-a", MAX_CONCURRENT_JOBS="4")
    node_b = cluster.start_node("node-b", MAX_CONCURRENT_JOBS="4")
    job_ids = cluster.submit(node_b, 8, LONG_JOB_SECONDS, "freeze")
    on_b = _jobs_running_on(cluster, "node-b", 4)

    started = time.monotonic()
    os.kill(node_b.pid, signal.SIGSTOP)
    try:
        lost_rows = _wait_until_taken_over(cluster, on_b)
        _outlast_the_programs(started)
    finally:
        os.kill(node_b.pid, signal.SIGCONT)
    wait_until(
        lambda: "was declared dead by another node" in node_b.output() or None,
        timeout=10,
        message=node_b.output,
    )
    _assert_taken_over_without_double_finishes(cluster, job_ids, on_b, lost_rows)
    assert node_b.is_running()
    assert "this node's lease lapsed" in "".join(
        (cluster.tmp_path / "node-b" / "output" / job_id / "attempt-1" / "stderr").read_text() for job_id in on_b
    )


def test_a_node_cut_off_from_the_database_has_its_jobs_rerun_elsewhere_and_no_program_finishes_twice(
    cluster: Cluster,
) -> None:
    url = make_url(cluster.database_url)
    socket_folder = url.query.get("host")
    target = str(socket_folder) if socket_folder else url.host
    assert target, cluster.database_url
    proxy = TcpProxy(target, url.port or DEFAULT_POSTGRES_PORT)
    proxy.start()
    try:
        cluster.start_node("node-a", MAX_CONCURRENT_JOBS="4")
        through_proxy = (
            url.difference_update_query(["host"])
            .set(host="127.0.0.1", port=proxy.port)
            .render_as_string(hide_password=False)
        )
        node_b = cluster.start_node("node-b", database_url=through_proxy, MAX_CONCURRENT_JOBS="4")
        job_ids = cluster.submit(node_b, 8, LONG_JOB_SECONDS, "partition")
        on_b = _jobs_running_on(cluster, "node-b", 4)
        with node_b.client() as client:
            assert client.get("/ready").json()["lease"] == "held"

        started = time.monotonic()
        proxy.cut()
        try:
            lost_rows = _wait_until_taken_over(cluster, on_b)
            with node_b.client() as client:
                cut_off = client.get("/ready")
            assert cut_off.status_code == 503, cut_off.text
            assert cut_off.json()["lease"] == "lapsed", cut_off.text
            assert "this node's lease lapsed" in cut_off.json()["reason"], cut_off.text
            _outlast_the_programs(started)
        finally:
            proxy.start()
        wait_until(
            lambda: "was declared dead by another node" in node_b.output() or None,
            timeout=20,
            message=node_b.output,
        )
        _assert_taken_over_without_double_finishes(cluster, job_ids, on_b, lost_rows)
        wait_until(lambda: cluster.node_rows()["node-b"]["state"] == "alive" or None, timeout=10, message=node_b.output)
        with node_b.client() as client:
            wait_until(
                lambda: client.get("/ready").json()["lease"] == "held" or None, timeout=10, message=node_b.output
            )
    finally:
        proxy.close()


def _sse_events(response: httpx.Response, events: list[tuple[str, str]], done: threading.Event) -> None:
    event, data = "message", list[str]()
    try:
        for line in response.iter_lines():
            if line == "":
                if data:
                    events.append((event, "\n".join(data)))
                event, data = "message", []
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
    finally:
        done.set()


def test_a_job_running_on_one_node_is_cancelled_and_its_output_followed_through_another(cluster: Cluster) -> None:
    token = "shared-token-of-the-nodes"
    authorized = {"Authorization": f"Bearer {token}"}
    node_b = cluster.start_node("node-b", CANCEL_GRACE_SECONDS="1", API_TOKEN=token)
    with httpx.Client(base_url=node_b.base_url, timeout=5.0, headers=authorized) as client_b:
        job_id = cluster.submit_one(client_b, 30, "elsewhere")
    _jobs_running_on(cluster, "node-b", 1)
    node_a = cluster.start_node("node-a", API_TOKEN=token)
    output = f"/jobs/{job_id}/attempts/1/output"

    with httpx.Client(base_url=node_a.base_url, timeout=5.0, headers=authorized) as client:
        # Forwarded with the caller's token: node-b answers from its file; without a token node-a refuses.
        assert httpx.get(f"{node_a.base_url}{output}", timeout=5.0).status_code == 401
        whole = client.get(output)
        assert whole.status_code == 200, whole.text
        assert whole.headers["output-source"] == "file"
        assert whole.text == ""  # the program prints nothing; its start line went to the runs file

        events: list[tuple[str, str]] = []
        done = threading.Event()
        with (
            httpx.Client(
                base_url=node_a.base_url, timeout=httpx.Timeout(5.0, read=30.0), headers=authorized
            ) as streaming,
            streaming.stream("GET", output, params={"follow": "true"}) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = threading.Thread(target=_sse_events, args=(response, events, done), daemon=True)
            reader.start()
            cancelled = client.post(f"/jobs/{job_id}/cancel")
            assert cancelled.status_code in (200, 202), cancelled.text
            assert done.wait(20), f"the followed stream ended with the attempt; got {events}"
        end = [json.loads(data) for event, data in events if event == "end"]
        assert end, events
        assert end[0]["outcome"] == "cancelled", events
        job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert [attempt["nodeId"] for attempt in job["attemptHistory"]] == ["node-b"]
