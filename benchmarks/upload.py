"""Upload: one 100 MB file to the Chenyu upload endpoint — throughput and client memory.

Rows: ours (``ChenyuClient.upload``: streamed from disk in 1 MiB chunks, Content-Length
known), aiohttp ``FormData`` with an aiofiles generator of 1 MiB chunks (the careful
hand-written alternative), ``requests`` with ``files=`` (what most users write), ``curl -F``
(the loopback reference), then 8 concurrent 100 MB uploads with ours and with aiohttp.

The emulator runs in its own process (``chenyu-assets serve``, restarted for every upload
so stored blobs don't pile up) and every client in its own process, so memory is per
client: ``rss +MB`` is the peak RSS during the upload minus the RSS just before it (curl:
its peak minus that of a trivial curl request), worst of ``--repeat`` runs. ``GB/s`` is
file bytes / seconds from the request's start to the answer, best of the runs; ``CPU s/GB``
is the client process's CPU (all threads) per GB sent.

The emulator streams the file to disk and hashes it, and is usually the bottleneck: the
ratio against curl, measured in the same run, is what matters.

    python benchmarks/upload.py            # 3 runs of each row
    python benchmarks/upload.py --quick    # 1 run each; under a minute
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import current_rss_mb, parser, record, rss_mb, table
from _server import ServerProcess, revision

from chenyu_assets import media
from chenyu_assets._core.multipart import DEFAULT_CHUNK_SIZE
from chenyu_assets.emulator.config import DEMO_API_KEY

SIZE = media.UPLOAD_MAX_BYTES  # 100 MiB, the largest upload the API takes
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00\x00\x03\x20" * 2 + b"\x08\x02"
FIELDS = {"media_type": "image", "purpose": "temp_input", "ttl_hours": "48"}
CONCURRENT = 8
CLIENT_TIMEOUT = 600.0
MiB = 1024 * 1024

TARGET_RATIO = 0.8  # ours ≥ 0.8 × curl's throughput
TARGET_RSS_MB = 16.0
TARGET_CONCURRENT_RSS_MB = CONCURRENT * DEFAULT_CHUNK_SIZE / MiB + 16.0


def make_file(path: Path, size: int = SIZE) -> None:
    """A PNG header then random bytes, written in 1 MiB chunks (never whole in memory)."""
    with path.open("wb") as f:
        f.write(PNG_HEAD)
        left = size - len(PNG_HEAD)
        while left > 0:
            n = min(MiB, left)
            f.write(os.urandom(n))
            left -= n


# -- the clients (each runs in its own process) ---------------------------------------------


async def _ours(url: str, key: str, path: str, count: int) -> dict[str, Any]:
    from chenyu_assets import ChenyuClient

    client = ChenyuClient(api_key=key, base_url=url, max_concurrent_uploads=max(count, 1))
    async with client:
        base = current_rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        ups = await asyncio.gather(*(client.upload(path) for _ in range(count)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if any(u.size_bytes != SIZE for u in ups):
        raise RuntimeError("the server stored a different size")
    return {"seconds": seconds, "cpu_s": cpu, "bytes": SIZE * count, "rss_base_mb": base}


async def _aiohttp(url: str, key: str, path: str, count: int) -> dict[str, Any]:
    """What a careful aiohttp user writes: FormData, the file as an aiofiles generator of
    1 MiB chunks (size unknown to aiohttp, so the body is sent chunked)."""
    import aiofiles
    import aiohttp

    async def chunks() -> Any:
        async with aiofiles.open(path, "rb") as f:
            while chunk := await f.read(MiB):
                yield chunk

    async def one(session: aiohttp.ClientSession) -> int:
        form = aiohttp.FormData()
        for k, v in FIELDS.items():
            form.add_field(k, v)
        form.add_field("file", chunks(), filename=Path(path).name, content_type="image/png")
        async with session.post(
            url + "/assets", data=form, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body}")
        size: int = body["data"]["size_bytes"]
        return size

    async with aiohttp.ClientSession() as session:
        base = current_rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        sizes = await asyncio.gather(*(one(session) for _ in range(count)))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if any(n != SIZE for n in sizes):
        raise RuntimeError("the server stored a different size")
    return {"seconds": seconds, "cpu_s": cpu, "bytes": SIZE * count, "rss_base_mb": base}


def _requests(url: str, key: str, path: str) -> dict[str, Any]:
    import requests

    with requests.Session() as session:
        base = current_rss_mb()
        started, cpu = time.perf_counter(), time.process_time()
        with open(path, "rb") as f:
            resp = session.post(
                url + "/assets",
                headers={"Authorization": f"Bearer {key}"},
                data=FIELDS,
                files={"file": (Path(path).name, f, "image/png")},
                timeout=CLIENT_TIMEOUT,
            )
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    resp.raise_for_status()
    if resp.json()["data"]["size_bytes"] != SIZE:
        raise RuntimeError("the server stored a different size")
    return {"seconds": seconds, "cpu_s": cpu, "bytes": SIZE, "rss_base_mb": base}


def client_main(argv: list[str]) -> None:
    name, url, key, path, count = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    if name == "ours":
        out = asyncio.run(_ours(url, key, path, count))
    elif name == "aiohttp":
        out = asyncio.run(_aiohttp(url, key, path, count))
    elif name == "requests":
        out = _requests(url, key, path)
    else:
        raise SystemExit(f"unknown client {name!r}")
    out["rss_peak_mb"] = rss_mb()
    print(json.dumps(out), flush=True)


# -- the driver ------------------------------------------------------------------------------


def run_python_client(name: str, url: str, path: Path, count: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", name, url, DEMO_API_KEY, str(path), str(count)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr.strip()[-400:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rss_growth_mb"] = out["rss_peak_mb"] - out["rss_base_mb"]
    return out


_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(u.ru_maxrss / 1024, u.ru_utime + u.ru_stime)\n"
    "sys.exit(code)\n"
)


def _curl_once(args: list[str]) -> tuple[str, float, float]:
    """Run curl under a tiny launcher whose only child is curl: (curl's stdout, its peak
    RSS in MiB and its CPU seconds, from RUSAGE_CHILDREN)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    *out, last = proc.stdout.strip().splitlines()
    peak, cpu = last.split()
    return "\n".join(out), float(peak), float(cpu)


def run_curl(curl: str, url: str, path: Path) -> dict[str, Any]:
    auth = ["-H", f"Authorization: Bearer {DEMO_API_KEY}"]
    health = url.split("/api/")[0] + "/_emulator/health"
    _, idle_peak, _ = _curl_once([curl, "-sS", "-o", "/dev/null", *auth, health])
    form = [a for k, v in FIELDS.items() for a in ("-F", f"{k}={v}")]
    out, peak, cpu = _curl_once(
        [
            curl,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %{size_upload}\\n",
            *auth,
            *form,
            "-F",
            f"file=@{path};type=image/png",
            url + "/assets",
        ]
    )
    code, total, sent = out.split()
    if code != "200":
        raise RuntimeError(f"curl got HTTP {code}")
    return {
        "seconds": float(total),
        "cpu_s": cpu,
        "bytes": SIZE,
        "uploaded": int(float(sent)),
        "rss_base_mb": idle_peak,
        "rss_peak_mb": peak,
        "rss_growth_mb": peak - idle_peak,
    }


LABELS = {
    "ours": "ours: ChenyuClient.upload",
    "aiohttp": "aiohttp FormData + aiofiles 1 MiB",
    "requests": "requests.post(files=...)",
    "curl": "curl -F (loopback reference)",
}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    p = parser(__doc__.split("\n\n", 1)[0])
    p.add_argument("--repeat", type=int, help="runs per client (default 3; quick 1)")
    args = p.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    curl = shutil.which("curl")
    cases = [("ours", 1), ("aiohttp", 1), ("requests", 1)]
    cases += [("curl", 1)] if curl else []
    cases += [("ours", CONCURRENT), ("aiohttp", CONCURRENT)]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in cases}

    with tempfile.TemporaryDirectory(prefix="chenyu-upload-bench-") as tmp:
        path = Path(tmp) / "upload-100MiB.png"
        make_file(path)
        print(
            f"upload [{revision()}]: a {SIZE / MiB:.0f} MiB file; emulator and every client "
            "in their own "
            f"processes; best throughput / worst RSS of {repeat}"
            + ("" if curl else "; curl not found: its row is skipped"),
            flush=True,
        )
        for _ in range(repeat):
            for name, count in cases:  # interleaved, so drift hits every client alike
                with ServerProcess({"validate_media": False}) as server:
                    url = server.url + "/api/open/v2"
                    if name == "curl":
                        assert curl is not None
                        res = run_curl(curl, url, path)
                    else:
                        res = run_python_client(name, url, path, count)
                res["gbps"] = res["bytes"] / res["seconds"] / 1e9
                runs[(name, count)].append(res)
                print(
                    f"  {name} ×{count}: {res['gbps']:.2f} GB/s, rss +{res['rss_growth_mb']:.1f} "
                    f"MB, client CPU {res['cpu_s']:.2f} s",
                    flush=True,
                )

    best = {c: max(rs, key=lambda r: r["gbps"]) for c, rs in runs.items()}
    rss = {c: max(r["rss_growth_mb"] for r in rs) for c, rs in runs.items()}
    ref = best[("curl", 1)]["gbps"] if curl else None
    ours, ours8 = ("ours", 1), ("ours", CONCURRENT)
    ratio = best[ours]["gbps"] / ref if ref else None
    checks = {
        ours: [
            (f"≥{TARGET_RATIO}× curl", ratio is None or ratio >= TARGET_RATIO),
            (f"≤{TARGET_RSS_MB:.0f} MB", rss[ours] <= TARGET_RSS_MB),
        ],
        ours8: [(f"≤{TARGET_CONCURRENT_RSS_MB:.0f} MB", rss[ours8] <= TARGET_CONCURRENT_RSS_MB)],
    }
    rows: list[list[Any]] = []
    for c in cases:
        name, count = c
        b = best[c]
        cpu_per_gb = sum(r["cpu_s"] for r in runs[c]) / sum(r["bytes"] for r in runs[c]) * 1e9
        target = ", ".join(f"{t} {'met' if ok else 'MISSED'}" for t, ok in checks.get(c, []))
        rows.append(
            [
                LABELS[name] + (f" ×{count} concurrent" if count > 1 else ""),
                b["gbps"],
                b["gbps"] / ref if ref else "n/a",
                round(rss[c], 1),
                round(cpu_per_gb, 2),
                target,
            ]
        )
    print()
    print(table(["client", "GB/s", "× curl", "rss +MB", "CPU s/GB", "target"], rows))

    misses = [
        f"{t} ({'×' + str(c[1]) if c[1] > 1 else 'one'})"
        for c, cs in checks.items()
        for t, ok in cs
        if not ok
    ]
    summary = (
        (f"{ratio:.2f}× curl" if ratio is not None else "no curl, no ratio")
        + f", +{rss[ours]:.1f} MB; ×{CONCURRENT} +{rss[ours8]:.1f} MB"
        + f" (aiohttp ×{CONCURRENT} +{rss[('aiohttp', CONCURRENT)]:.1f} MB,"
        + f" requests files= +{rss[('requests', 1)]:.0f} MB)"
    )
    if misses:
        verdict = f"upload: MISSED {'; '.join(misses)} — ours {summary}"
    else:
        verdict = f"upload: MET — ours {summary}"
    data = {
        "size": SIZE,
        "repeat": repeat,
        "runs": {f"{n}x{c}": rs for (n, c), rs in runs.items()},
        "curl": bool(curl),
        "loadavg": os.getloadavg(),
        "revision": revision(),
    }
    record("upload", args, data, verdict)


if __name__ == "__main__":
    main()
