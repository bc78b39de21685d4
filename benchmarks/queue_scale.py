"""Queued ingest: do 4 workers of one job go 4× as fast as 1 when uploads are the
bottleneck, and how much of the shared CreateAsset limit do they use?

Each row starts a fresh ``chenyu-assets serve`` (limits 30 CreateAsset/s, 30 Processing,
processing 0.3 ± 0.1 s) and a fresh ``redis-server``, then N ``ingest --queue`` worker
processes, each capped at ``--per-worker`` items/s of upload bandwidth
(``--upload-bandwidth``: the file size × that rate). The workers start on an empty job
held open by an enqueuer lease, so all of them are up before the first item exists; the
items are then enqueued at once and the clock runs from there to the last item Active
(read from the job's counts in Redis every 50 ms).

Columns: ``items/s`` items over that span; ``speed-up`` over the 1-worker row;
``creates/limit`` CreateAsset per second (first to last, emulator audit) over the limit;
``429`` rejected creates; ``max/1s`` most creates in one second (≤ 30).

    python benchmarks/queue_scale.py            # 240 items per row
    python benchmarks/queue_scale.py --quick    # 120 items per row, about a minute
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import parser, record, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chenyu_assets.ark import ArkClient
from chenyu_assets.batch.queue import enqueue
from chenyu_assets.batch.queue_store import QueueStore
from chenyu_assets.batch.sources import open_source
from chenyu_assets.emulator import DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Audit
from tests import mediagen, serve_kit
from tests.redis_kit import RedisServer, redis_server_binary

LIMIT = 30.0
JOB = "bench"
COLUMNS = (
    "workers",
    "items_per_s",
    "speed_up",
    "create_utilisation",
    "rejected_429",
    "max_creates_in_1s",
    "duplicates",
)


def _audit(url: str) -> Audit:
    with urllib.request.urlopen(url + "/_emulator/audit", timeout=30) as resp:
        return Audit.model_validate(json.loads(resp.read()))


async def _group(url: str) -> str:
    async with ArkClient(
        access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY, base_url=url
    ) as ark:
        return await ark.create_asset_group(name="queue-bench")


def _worker(
    url_env: dict[str, str], redis_url: str, name: str, bps: float
) -> subprocess.Popen[str]:
    args = [
        sys.executable, "-m", "chenyu_assets.cli", "ingest", "--queue", redis_url,
        "--job", JOB, "--worker-name", name, "--upload-bandwidth", str(int(bps)),
        "--rate-margin", "0.1", "--prefetch", "8", "--no-progress", "--json",
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=url_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def _consumers(store: QueueStore) -> int:
    return len(await store.live("workers"))


async def _row(workers: int, src: Path, n: int, bps: float, tmp: Path) -> dict[str, Any]:
    config = tmp / f"emu-{workers}.json"
    config.write_text(json.dumps({"processing_delay": 0.3, "processing_jitter": 0.1}))
    server = RedisServer(redis_server_binary(), tmp / f"redis-{workers}")
    server.start()
    store = QueueStore(server.url, job=JOB)
    try:
        with serve_kit.serve("--time-scale", "1", "--config", str(config)) as served:
            group_id = await _group(served.url)
            await store.open_job(group_id)
            await store.lease("add", "bench-gate", 120)  # the workers wait for the items
            procs = [_worker(served.env, server.url, f"w{i}", bps) for i in range(workers)]
            deadline = time.monotonic() + 60
            while await _consumers(store) < workers:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    for p in procs:
                        p.kill()
                    errs = [p.communicate()[1][-1500:] for p in procs]
                    raise SystemExit(f"the workers did not start within 60 s: {errs}")
                await asyncio.sleep(0.05)
            started = time.monotonic()
            await enqueue(store, open_source(src), group_id=group_id)
            await store.lease("del", "bench-gate")
            while (await store.snapshot(limit=0))["states"].get("active", 0) < n:
                if time.monotonic() - started > 600:
                    raise SystemExit("the job did not finish within 600 s")
                await asyncio.sleep(0.05)
            span = time.monotonic() - started
            outs = [p.communicate(timeout=120) for p in procs]
            for p, (_out, err) in zip(procs, outs, strict=True):
                if p.returncode != 0:
                    raise SystemExit(f"a worker failed ({p.returncode}): {err[-1500:]}")
            audit = _audit(served.url)
    finally:
        await store.aclose()
        server.stop()
    times = sorted(r.t for r in audit.requests if r.action == "CreateAsset" and r.status == 200)
    names = [a.name for a in audit.assets]
    return {
        "workers": workers,
        "items": n,
        "span_s": round(span, 2),
        "items_per_s": round(n / span, 2),
        "create_utilisation": round((len(times) - 1) / ((times[-1] - times[0]) * LIMIT), 3),
        "rejected_429": sum(audit.rejected_429.values()),
        "max_creates_in_1s": audit.max_in_window("CreateAsset", window=1.0),
        "duplicates": len(names) - len(set(names)),
        "per_worker": [
            json.loads(o.strip().splitlines()[-1])["worker"]["claimed"] for o, _ in outs
        ],
    }


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--items", type=int, help="items per row (default 240; --quick 120)")
    p.add_argument("--per-worker", type=float, default=6.0, help="items/s one worker uploads")
    args = p.parse_args()
    n = args.items or (120 if args.quick else 240)
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "src"
        src.mkdir()
        data = mediagen.png(400, 400, mode="L")
        for i in range(n):
            (src / f"img-{i:04d}.png").write_bytes(data)
        bps = len(data) * args.per_worker
        rows = [asyncio.run(_row(w, src, n, bps, tmp)) for w in (1, 4)]
    base = rows[0]["items_per_s"]
    for row in rows:
        row["speed_up"] = round(row["items_per_s"] / base, 2)
    print(
        table(
            ["workers", "items/s", "speed-up", "creates/limit", "429", "max/1s", "dups"],
            [[r[k] for k in COLUMNS] for r in rows],
        )
    )
    four = rows[1]
    ok = four["speed_up"] >= 3.5 and four["duplicates"] == 0 and four["max_creates_in_1s"] <= LIMIT
    verdict = (
        f"{'OK' if ok else 'BELOW TARGET'}: 4 workers {four['speed_up']}x one "
        f"(target >= 3.5x) at {args.per_worker:g} items/s of upload each; "
        f"{four['create_utilisation']:.2f} of the create limit; {four['duplicates']} duplicates"
    )
    record(
        "queue_scale",
        args,
        {"items": n, "per_worker_items_per_s": args.per_worker, "bytes_per_s": bps, "rows": rows},
        verdict,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
