"""Queued ingest with real processes: ``enqueue`` and ``ingest --queue`` workers against
one ``serve`` emulator and one real redis-server (the cluster of test_scale_out.py: limits
30 CreateAsset/s, 30 Processing, processing 0.3 ± 0.1 s).

The default test kills a worker that holds items, some of them already sent, starts a
new one mid-run, and checks the job ends with every item Active exactly once, the
Processing cap and the strict window held, and a bounded count of 429s; the utilisation
figure (>= 0.95 of the create limit over the busy span) is ``-m slow`` and
``benchmarks/queue_scale.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.redis_kit import redis_server
from tests.test_scale_out import (
    LIMIT,
    REJECTED_PER_100,
    Cluster,
    HoldSlots,
    assert_complete,
    cluster,
    creates,
    finish,
    make_images,
    report,
    wait_for_uploads_to_settle,
)

__all__ = ["cluster", "redis_server"]  # the fixtures, re-exported for pytest

JOB = "t"
BASE = "chenyu-assets:queue:{t}:"
CLAIM_IDLE = 2.0  # seconds: the emulator's creates take milliseconds


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "chenyu_assets.cli", *args]


def enqueue(c: Cluster, src: Path) -> dict[str, int]:
    args = cli("enqueue", str(src), "--queue", c.redis.url, "--job", JOB, "--json")
    proc = subprocess.run(
        [*args, "--group-id", c.group_id],
        env=c.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return counts


def worker(c: Cluster, name: str, *extra: str) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "chenyu_assets.cli",
        "ingest",
        "--queue",
        c.redis.url,
        "--job",
        JOB,
        "--worker-name",
        name,
        "--claim-idle",
        str(CLAIM_IDLE),
        "--slot-lease",
        "3",
        "--rate-margin",
        "0.1",  # as in test_scale_out: four workers on a loaded 2-core host
        "--out",
        str(c.tmp / f"{name}.jsonl"),
        "--no-progress",
        "--json",
        *extra,
    ]
    return subprocess.Popen(
        args, env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def records(c: Cluster) -> list[dict[str, str]]:
    import redis

    r = redis.Redis.from_url(c.redis.url, decode_responses=True)
    try:
        return [r.hgetall(k) for k in r.scan_iter(match=BASE + "item:*", count=1000)]
    finally:
        r.close()


def pending_of(c: Cluster, name: str) -> int:
    import redis

    r = redis.Redis.from_url(c.redis.url, decode_responses=True)
    try:
        summary = r.xpending(BASE + "stream", "workers")
        return sum(int(x["pending"]) for x in summary["consumers"] or [] if x["name"] == name)
    finally:
        r.close()


def status(c: Cluster) -> dict[str, Any]:
    proc = subprocess.run(
        cli("status", "--queue", c.redis.url, "--job", JOB, "--json"),
        env=c.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def rows(c: Cluster, name: str) -> list[dict[str, Any]]:
    path = c.tmp / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.subprocess
def test_enqueue_twice_adds_nothing_and_ingest_queue_reruns_create_nothing(
    cluster: Cluster,
) -> None:
    src = make_images(cluster.tmp / "src", 5)
    assert enqueue(cluster, src) == {"added": 5, "known": 0, "skipped": 0, "ignored": 0}
    snap = status(cluster)
    assert snap["states"] == {"queued": 5}
    assert snap["undelivered"] == 5
    assert snap["group_id"] == cluster.group_id
    # the one command of every machine: enqueue (adds nothing now), then work
    code, summary, err = finish(worker(cluster, "one", str(src), "--group-id", cluster.group_id))
    assert code == 0, err[-2000:]
    assert (summary["active"], summary["creates"]) == (5, 5)
    assert "added 0, known 5" in err
    code, summary, err = finish(worker(cluster, "two", str(src)))  # a rerun: nothing to do
    assert code == 0, err[-2000:]
    assert (summary["total"], summary["creates"]) == (0, 0)
    assert_complete(cluster.audit(), 5)
    assert status(cluster)["states"] == {"active": 5}


@pytest.mark.subprocess
def test_killed_worker_is_taken_over_and_a_late_worker_joins(cluster: Cluster) -> None:
    n = 120
    src = make_images(cluster.tmp / "src", n)
    assert enqueue(cluster, src)["added"] == n
    # two slow workers (a 40 kB/s link: ~2 images/s each) keep the job going while the
    # victim works at full speed and the late worker joins
    slow = ("--upload-bandwidth", "40k", "--prefetch", "8")
    victim = worker(cluster, "victim", "--prefetch", "16")
    others = [worker(cluster, f"slow-{i}", *slow) for i in range(2)]
    held = sent = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # mid-run: the victim holds items, some already sent
        time.sleep(0.05)
        held = pending_of(cluster, "victim")
        mine = [r for r in records(cluster) if r.get("worker") == "victim"]
        sent = sum(r.get("sent") == "1" and r["state"] in ("sending", "created") for r in mine)
        if held >= 4 and sent >= 1 and len(creates(cluster.audit())) >= 10:
            break
    assert held >= 4, "the victim never held items"
    assert sent >= 1, "the victim never sent a create"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    held = pending_of(cluster, "victim")  # what it held when it died
    assert held >= 1
    late = worker(cluster, "late")
    results = [finish(p, timeout=120) for p in (*others, late)]
    for code, _summary, err in results:
        assert code == 0, err[-2000:]
    audit = cluster.audit()
    times = creates(audit)
    span = times[-1] - times[0]
    assert_complete(audit, n)  # every item Active, one asset per name, window and cap held
    assert sum(audit.rejected_429.values()) <= REJECTED_PER_100 * n // 100
    workers = [s["worker"] for _, s, _ in results]
    assert sum(w["taken_over"] for w in workers) >= held  # the dead worker's items went on
    late_rows = rows(cluster, "late")
    assert late_rows, "the worker started mid-run did no work"
    done = [r for name in ("slow-0", "slow-1", "late") for r in rows(cluster, name)]
    assert {r["status"] for r in done} == {"active"}
    # every item reported by a live worker, except those the victim finished before dying
    assert len({r["key"] for r in done}) == len(done)
    assert len(done) >= n - len(rows(cluster, "victim"))
    snap = status(cluster)
    assert snap["states"] == {"active": n}
    assert snap["in_flight"] == {}
    assert snap["undelivered"] == 0
    assert snap["workers"] == []  # the victim's lease ran out before its items were taken
    report(
        "queue: kill one, join one",
        {
            "items": n,
            "held_at_kill": held,
            "sent_at_kill": sent,
            "taken_over": [w["taken_over"] for w in workers],
            "per_worker": {w["name"]: w["claimed"] for w in workers},
            "rejected_429": sum(audit.rejected_429.values()),
            "processing_peak": max(audit.max_processing.values()),
            # two of the workers are upload-capped on purpose: not a throughput figure
            "create_utilisation": round((len(times) - 1) / (span * LIMIT), 3),
        },
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_four_queue_workers_use_the_whole_rate(cluster: Cluster) -> None:
    """Four workers of one job keep the shared CreateAsset rate >= 95 % busy with no 429
    (the Processing slots are held until the first uploads settled, as in test_scale_out)."""
    n = 400
    src = make_images(cluster.tmp / "src", n)
    assert enqueue(cluster, src)["added"] == n
    hold = HoldSlots(cluster.redis.url)
    procs = [worker(cluster, f"w{i}", "--prefetch", "48") for i in range(4)]
    wait_for_uploads_to_settle(cluster)
    hold.free()
    results = [finish(p, timeout=300) for p in procs]
    for code, _summary, err in results:
        assert code == 0, err[-2000:]
    audit = cluster.audit()
    assert_complete(audit, n)
    times = creates(audit)
    span = times[-1] - times[0]
    figures = {
        "items": n,
        "busy_span_s": round(span, 2),
        "utilisation": round((len(times) - 1) / (span * LIMIT), 4),
        "rejected_429": sum(audit.rejected_429.values()),
        "per_worker": [s["worker"]["claimed"] for _, s, _ in results],
    }
    report("queue: 4 workers", figures)
    assert figures["rejected_429"] == 0, figures
    assert figures["utilisation"] >= 0.95, figures


@pytest.mark.slow
@pytest.mark.subprocess
def test_redis_dies_then_comes_back_empty_and_the_rerun_adopts(cluster: Cluster) -> None:
    """Redis lost mid-run: the workers stop (exit 4); Redis comes back *empty* (no
    persistence): the same command enqueues again and adopts what the group holds."""
    n = 150
    src = make_images(cluster.tmp / "src", n)
    procs = [worker(cluster, f"w{i}", str(src), "--group-id", cluster.group_id) for i in range(2)]
    deadline = time.monotonic() + 60
    while len(creates(cluster.audit())) < 40:
        assert time.monotonic() < deadline, "no 40 creates in 60 s"
        time.sleep(0.05)
    cluster.redis.kill()
    for code, _summary, err in (finish(p, timeout=60) for p in procs):
        assert code == 4, err[-2000:]
        assert "unavailable" in err
    made = len(creates(cluster.audit()))
    assert 0 < made < n
    cluster.redis.start()
    code, summary, err = finish(worker(cluster, "again", str(src), "--group-id", cluster.group_id))
    assert code == 0, err[-2000:]
    # every asset made before the loss is adopted by name, the rest created once
    assert (summary["adopted"], summary["creates"]) == (made, n - made)
    assert_complete(cluster.audit(), n)  # every item once, none created twice
    assert status(cluster)["states"] == {"active": n}
