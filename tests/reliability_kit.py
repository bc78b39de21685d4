"""Shared machinery of the reliability runs (tests/test_reliability.py, benchmarks/soak.py).

* :func:`fault_mix` — the issue's fault mix as emulator rules, per request and seeded;
* :class:`Served` — ``chenyu-assets serve`` in its own process, steered over HTTP;
* the ingest *driver* (``python -m tests.reliability_kit ingest ...``): the SDK's
  :func:`~chenyu_assets.batch.ingest` in a subprocess that a test may SIGKILL, with short
  socket timeouts (the CLI's read timeout is 60 s, too long for injected hangs);
* :func:`figures` — attempted / active / failed / lost / duplicated / unexpected /
  recovered, computed from the emulator's audit, the journal and the results file;
* :func:`report` — print a figures table and append it to
  ``benchmarks/results/reliability.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chenyu_assets.emulator import Audit
from chenyu_assets.emulator.config import DEMO_ACCESS_KEY, DEMO_API_KEY, DEMO_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "reliability.jsonl"

#: The actions the fault mix applies to: everything an ingest sends after setup. The group
#: actions (CreateAssetGroup, ListAssetGroups) are left alone: the group is made once,
#: before the run, and is not what these runs measure.
FAULTED = (("ark", "CreateAsset"), ("ark", "GetAsset"), ("ark", "ListAssets"))
FAULTED_UPLOAD = ("chenyu", "UploadAsset")

#: What a failed item may legitimately end with: the input was refused (``skipped`` by the
#: pre-flight, or ``failed`` with the service's InvalidParameter.*). Any other failure is
#: "unexpected": the inputs are valid, so an injected transient fault caused it.
MEDIA_CODES_PREFIX = ("InvalidParameter",)

DEFINITIONS = {
    "attempted": "input items (distinct keys in the source)",
    "active": "items whose last result is active, journaled active, with an Active asset",
    "failed": "items whose last result is failed or skipped",
    "lost": "input items with no terminal result, or active without an Active asset",
    "duplicated": "Names with more than one asset in the group (extra assets counted)",
    "unexpected": "assets whose Name matches no input item, plus items failed for another "
    "reason than a refusal of their input (skipped, InvalidParameter.*): a transient fault's",
    "recovered": "ambiguous creates whose asset was found by reconciliation (report)",
}


# -- the fault mix ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """Marginal per-request probabilities of each fault (seeded by the emulator)."""

    server_error: float = 0.10  # 503, half before the commit and half after it
    reset_after: float = 0.05  # TCP RST after the commit
    timeout: float = 0.03  # hang past the client's read timeout (half after the commit)
    throttle: float = 0.02  # 429 with Retry-After
    retry_after: str = "0.5"
    list_lag: float = 1.0  # real seconds new assets stay out of ListAssets

    def describe(self) -> str:
        return (
            f"{self.server_error:.0%} 503 (½ before / ½ after commit), "
            f"{self.reset_after:.0%} reset after commit, {self.timeout:.0%} hang "
            f"(½ before / ½ after commit; ends by the client's read timeout), "
            f"{self.throttle:.0%} 429 (Retry-After {self.retry_after} s), "
            f"list lag {self.list_lag:g} s"
        )


def fault_mix(mix: Mix = Mix()) -> list[dict[str, Any]]:
    """Emulator rules giving ``mix``'s marginal rates on every faulted request.

    The emulator walks the rules in order and fires the first whose draw succeeds, so
    rule *i* gets probability ``p_i / (1 - p_1 - ... - p_{i-1})``: the marginal rate of
    each kind is then exactly its share of ``mix``.
    """
    kinds: list[tuple[float, dict[str, Any]]] = [
        (mix.server_error / 2, {"kind": "http_error", "status": 503, "phase": "before"}),
        (mix.server_error / 2, {"kind": "http_error", "status": 503, "phase": "after"}),
        (mix.reset_after, {"kind": "reset", "phase": "after"}),
        (mix.timeout / 2, {"kind": "hang", "phase": "before"}),
        (mix.timeout / 2, {"kind": "hang", "phase": "after"}),
        (mix.throttle, {"kind": "http_error", "status": 429, "retry_after": mix.retry_after}),
    ]
    rules: list[dict[str, Any]] = []
    for family, action in (*FAULTED, FAULTED_UPLOAD):
        used = 0.0
        for p, rule in kinds:
            if p <= 0:
                continue
            conditional = min(1.0, p / (1.0 - used))
            used += p
            rules.append({"family": family, "action": action, "probability": conditional, **rule})
    return rules


# -- the emulator in its own process ---------------------------------------------------


class Served:
    """``chenyu-assets serve --port 0 --time-scale F --data-dir D`` and its control API."""

    def __init__(
        self,
        data_dir: Path,
        *,
        time_scale: float = 10.0,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.time_scale = time_scale
        self.config = {"seed": seed, **(config or {})}
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    def __enter__(self) -> Served:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "emulator.json"
        cfg.write_text(json.dumps(self.config), encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in (
            "CHENYU_EMULATOR_ACCESS_KEY",
            "CHENYU_EMULATOR_SECRET_KEY",
            "CHENYU_EMULATOR_API_KEY",
        ):
            env.pop(name, None)
        self._log = (self.data_dir / "serve.log").open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chenyu_assets.cli",
                "serve",
                "--port",
                "0",
                "--time-scale",
                str(self.time_scale),
                "--data-dir",
                str(self.data_dir / "state"),
                "--config",
                str(cfg),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()
        if "listening on http://" not in first:
            self.__exit__()
            log = (self.data_dir / "serve.log").read_text(encoding="utf-8")
            raise RuntimeError(f"the emulator did not start: {first!r} {log[-1000:]!r}")
        self.url = first.strip().rsplit(" ", 1)[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def env(self) -> dict[str, str]:
        """What an ingest process needs to reach this emulator."""
        return {
            **os.environ,
            "VOLC_ACCESSKEY": DEMO_ACCESS_KEY,
            "VOLC_SECRETKEY": DEMO_SECRET_KEY,
            "ARK_BASE_URL": self.url,
            "CHENYU_API_KEY": DEMO_API_KEY,
            "CHENYU_BASE_URL": self.url + "/api/open/v2",
            "PYTHONUNBUFFERED": "1",
        }

    def _post(self, path: str, data: Any) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def set_faults(self, rules: Sequence[Mapping[str, Any]]) -> None:
        self._post("/_emulator/faults", list(rules))

    def set_config(self, **changes: Any) -> None:
        self._post("/_emulator/config", changes)

    def fired(self) -> list[int]:
        with urllib.request.urlopen(self.url + "/_emulator/faults", timeout=30) as resp:
            fired: list[int] = json.loads(resp.read())["fired"]
        return fired

    def audit(self) -> Audit:
        with urllib.request.urlopen(self.url + "/_emulator/audit", timeout=60) as resp:
            return Audit.model_validate_json(resp.read())

    def create_group(self, name: str) -> str:
        """A group made with the SDK before any fault is switched on."""
        from chenyu_assets.ark import ArkClient

        async def make() -> str:
            async with ArkClient(
                access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY, base_url=self.url
            ) as ark:
                return await ark.create_asset_group(name=name)

        return asyncio.run(make())


# -- source files ----------------------------------------------------------------------


def make_images(root: Path, n: int) -> list[str]:
    """``n`` small valid PNGs; returns their source keys (relative paths)."""
    from tests import mediagen

    root.mkdir(parents=True, exist_ok=True)
    data = mediagen.png(640, 480)
    keys = []
    for i in range(n):
        (root / f"img-{i:05d}.png").write_bytes(data)
        keys.append(f"img-{i:05d}.png")
    return keys


# -- the ingest driver (a subprocess a test may SIGKILL) -------------------------------


@dataclass(frozen=True)
class DriverArgs:
    source: Path
    group_id: str
    journal: Path
    out: Path
    rate_scale: float = 10.0
    read_timeout: float = 1.0
    reconcile_wait: float = 2.0
    stale_after: float = 5.0

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.reliability_kit",
            "ingest",
            str(self.source),
            "--group-id",
            self.group_id,
            "--journal",
            str(self.journal),
            "--out",
            str(self.out),
            "--rate-scale",
            str(self.rate_scale),
            "--read-timeout",
            str(self.read_timeout),
            "--reconcile-wait",
            str(self.reconcile_wait),
            "--stale-after",
            str(self.stale_after),
        ]


def start_driver(args: DriverArgs, env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args.argv(),
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_driver(args: DriverArgs, env: Mapping[str, str], timeout: float = 300) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        args.argv(),
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    summary: dict[str, Any] = {}
    lines = done.stdout.strip().splitlines()
    if lines:
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            summary = {}
    return Run(done.returncode, summary, done.stderr, time.monotonic() - started)


@dataclass
class Run:
    code: int
    summary: dict[str, Any]
    stderr: str
    elapsed: float


async def _drive(ns: argparse.Namespace) -> int:
    from chenyu_assets._core.transport import Timeouts
    from chenyu_assets.ark import ArkClient
    from chenyu_assets.batch import IngestOptions, ingest
    from chenyu_assets.chenyu import CHENYU_RATES, ChenyuClient
    from chenyu_assets.limits import ACTION_RATES

    if ns.log:
        import logging

        logging.basicConfig(level=ns.log.upper(), stream=sys.stderr)
    timeouts = Timeouts(connect=2.0, read=ns.read_timeout)
    scale = ns.rate_scale
    options = IngestOptions(reconcile_wait=ns.reconcile_wait, stale_after=ns.stale_after)
    out = Path(ns.out).open("a", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        async with (
            ArkClient.from_env(
                rate_limits={k: v * scale for k, v in ACTION_RATES.items()}, timeouts=timeouts
            ) as ark,
            ChenyuClient.from_env(
                rate_limits={k: v * scale for k, v in CHENYU_RATES.items()}, timeouts=timeouts
            ) as chenyu,
        ):

            def write(result: Any) -> None:
                out.write(json.dumps(result.to_json()) + "\n")
                out.flush()

            report = await ingest(
                ark,
                Path(ns.source),
                group_id=ns.group_id,
                journal=ns.journal,
                chenyu=chenyu,
                options=options,
                on_result=write,
            )
    finally:
        out.close()
    summary = {k: v for k, v in asdict(report).items() if k != "failures"}
    summary["failures"] = report.failures
    print(json.dumps(summary))
    if report.fatal:
        return 4
    return 3 if report.failed or report.skipped else 0


def _driver_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability_kit ingest")
    p.add_argument("source")
    p.add_argument("--group-id", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rate-scale", type=float, default=10.0)
    p.add_argument("--read-timeout", type=float, default=1.0)
    p.add_argument("--reconcile-wait", type=float, default=2.0)
    p.add_argument("--stale-after", type=float, default=5.0)
    p.add_argument("--log", default=os.environ.get("RELIABILITY_LOG", ""))
    return asyncio.run(_drive(p.parse_args(argv)))


# -- the journal, read-only --------------------------------------------------------------


def journal_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (never takes the ingest's lock, never writes)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def states(path: Path) -> dict[str, str]:
    """key -> state of every journal row (empty while the journal does not exist)."""
    if not path.exists():
        return {}
    try:
        conn = journal_ro(path)
        try:
            return dict(conn.execute("SELECT key, state FROM items"))
        finally:
            conn.close()
    except sqlite3.Error:
        return {}


def wait_for_state(path: Path, state: str, timeout: float = 30.0) -> list[str]:
    """Poll the journal until some row is in ``state``; the keys in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = [k for k, s in states(path).items() if s == state]
        if keys:
            return keys
        time.sleep(0.02)
    raise TimeoutError(f"no journal row reached {state!r} within {timeout:g} s")


#: Journal states in which an item is in flight: intent committed, an asset maybe or
#: surely made, not finished (``uploaded`` only has a signed URL, nothing created yet).
IN_FLIGHT = frozenset({"creating", "created", "unknown"})
#: Journal states an item ends in.
FINISHED = frozenset({"active", "failed", "skipped"})


def count_states(path: Path) -> dict[str, int]:
    """state -> number of journal rows in it."""
    counts: dict[str, int] = {}
    for state in states(path).values():
        counts[state] = counts.get(state, 0) + 1
    return counts


def kill_mid_run(
    proc: subprocess.Popen[str], journal: Path, n: int, rng: random.Random, timeout: float = 60
) -> dict[str, int]:
    """SIGKILL ``proc`` at a random moment inside its run, and prove it landed there.

    The moment: once a random number (1 .. half of those left) more of the ``n`` items are
    past their create intent, read from the journal (read-only) by polling, never by a
    guess at how long start-up takes; plus a random extra 0-50 ms. Returns the journal's
    state counts right after the kill, and asserts that the kill interrupted work: items
    in flight (:data:`IN_FLIGHT`), and not every item finished."""
    past = sum(v for k, v in count_states(journal).items() if k not in ("pending", "uploaded"))
    target = past + rng.randint(1, max(1, (n - past) // 2))  # a later kill: past the last
    extra = rng.uniform(0.0, 0.05)
    give_up = time.monotonic() + timeout
    while True:
        counts = count_states(journal)
        if sum(v for k, v in counts.items() if k not in ("pending", "uploaded")) >= target:
            break
        assert proc.poll() is None, f"the run ended before the kill: {counts}"
        assert time.monotonic() < give_up, f"no {target} creates within {timeout:g} s"
        time.sleep(0.01)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    counts = count_states(journal)
    in_flight = sum(counts.get(s, 0) for s in IN_FLIGHT)
    finished = sum(counts.get(s, 0) for s in FINISHED)
    assert in_flight >= 1, f"nothing was in flight at the kill: {counts}"
    assert finished < n, f"every item had finished before the kill: {counts}"
    return counts


def integrity(path: Path) -> str:
    conn = journal_ro(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# -- figures -----------------------------------------------------------------------------


@dataclass
class Figures:
    attempted: int = 0
    active: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    recovered: int = 0
    #: more figures (requests, faults, creates...), for the table
    extra: dict[str, Any] = field(default_factory=dict)
    #: what went wrong, item by item (empty on a pass)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    def row(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "active": self.active,
            "failed": self.failed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "recovered": self.recovered,
            **self.extra,
        }


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """key -> the last result line for it (a torn last line, from a SIGKILL, is skipped)."""
    last: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return last
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            last[row["key"]] = row
    return last


def figures(
    keys: Iterable[str],
    *,
    audit: Audit,
    group_id: str,
    journal: Path,
    results: Path,
    recovered: int,
) -> Figures:
    """The figures of one ingest (all its runs), from three independent records."""
    keys = list(keys)
    out = Figures(attempted=len(keys), recovered=recovered)
    conn = journal_ro(journal)
    try:
        rows = {
            key: (name, state)
            for key, name, state in conn.execute("SELECT key, name, state FROM items")
        }
    finally:
        conn.close()
    last = read_results(results)
    assets = [a for a in audit.assets if a.group_id == group_id]
    by_name: dict[str, list[Any]] = {}
    for asset in assets:
        by_name.setdefault(asset.name, []).append(asset)
    expected_names = set()
    for key in keys:
        name, state = rows.get(key, (None, None))
        result = last.get(key)
        status = result["status"] if result else None
        if name is not None:
            expected_names.add(name)
        found = by_name.get(name or "", [])
        if status == "active":
            if state == "active" and any(a.status == "Active" for a in found):
                out.active += 1
            else:
                out.lost += 1
                out.problems.append(f"{key}: result active, journal {state}, assets {found}")
        elif status in ("failed", "skipped"):
            out.failed += 1
            code = str(result.get("error_code") if result else "")
            if status == "failed" and not code.startswith(MEDIA_CODES_PREFIX):
                out.unexpected += 1
                out.problems.append(f"{key}: {status} {code}: {result}")
        else:
            out.lost += 1
            out.problems.append(f"{key}: no terminal result (journal {state})")
    for name, found in by_name.items():
        if len(found) > 1:
            out.duplicated += len(found) - 1
            out.problems.append(f"duplicate Name {name}: {[a.id for a in found]}")
        if name not in expected_names:
            out.unexpected += len(found)
            out.problems.append(f"unexpected asset {name}: {[a.id for a in found]}")
    creates = [r for r in audit.requests if r.family == "ark" and r.action == "CreateAsset"]
    ok_creates = sum(1 for r in creates if r.status == 200)
    faults = sum(1 for r in audit.requests if (r.code or "").startswith("fault:"))
    out.extra = {
        "requests": len(audit.requests),
        "faults": faults,
        "creates_sent": len(creates),
        "creates_answered": ok_creates,
        # assets whose CreateAsset got no usable answer: only reconciliation can adopt them
        "committed_unanswered": len(assets) - ok_creates,
        "uploads_stored": len(audit.uploads),
        "journal_integrity": integrity(journal),
    }
    return out


# -- one whole run: the ingest under the fault mix, killed ``kills`` times -----------------


@dataclass
class Outcome:
    figures: Figures
    audit: Audit
    runs: list[Run]
    killed_at: list[dict[str, int]]


def ingest_under_faults(
    workdir: Path,
    n: int,
    *,
    seed: int,
    kills: int = 0,
    mix: Mix = Mix(),
    time_scale: float = 10.0,
    max_runs: int = 6,
) -> Outcome:
    """``n`` PNG files ingested under ``mix``; SIGKILLed ``kills`` times at seeded random
    moments, then rerun (faults still on) until a run exits 0 or ``max_runs`` ran."""
    keys = make_images(workdir / "src", n)
    rng = random.Random(seed)
    with Served(workdir / "emu", time_scale=time_scale, seed=seed) as served:
        group = served.create_group(f"faults-{seed}")
        served.set_config(list_lag=mix.list_lag)
        served.set_faults(fault_mix(mix))
        args = DriverArgs(
            workdir / "src",
            group,
            workdir / "journal.db",
            workdir / "results.jsonl",
            rate_scale=time_scale,
            reconcile_wait=mix.list_lag + 1.0,
        )
        killed_at: list[dict[str, int]] = []
        # a killed run paces its creates at a fifth of the server's limits: the half of the
        # items left after the kill moment then take long enough that the kill lands while
        # they are in flight even on a loaded machine (kill_mid_run asserts it did)
        killed_args = replace(args, rate_scale=time_scale / 5)
        for _ in range(kills):
            proc = start_driver(killed_args, served.env)
            killed_at.append(kill_mid_run(proc, args.journal, n, rng))
        runs: list[Run] = []
        for _ in range(max_runs):
            run = run_driver(args, served.env, timeout=1800)
            runs.append(run)
            if run.code == 0:
                break
        served.set_faults([])
        audit = served.audit()
    figs = figures(
        keys,
        audit=audit,
        group_id=group,
        journal=args.journal,
        results=args.out,
        recovered=sum(int(r.summary.get("recovered", 0)) for r in runs),
    )
    figs.extra["runs"] = kills + len(runs)
    figs.extra["last_exit"] = runs[-1].code
    figs.extra["elapsed_s"] = round(sum(r.elapsed for r in runs), 1)
    if runs[-1].code != 0:
        figs.problems.append(f"last run exited {runs[-1].code}: {runs[-1].stderr[-2000:]}")
    return Outcome(figs, audit, runs, killed_at)


# -- printing and recording ----------------------------------------------------------------


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    cells = [list(columns)] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def report(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    record: bool = True,
    **meta: Any,
) -> str:
    """Print ``rows`` as a table under ``name``; append them to reliability.jsonl."""
    columns = list(columns or rows[0].keys()) if rows else []
    text = f"\n== {name}\n{table(rows, columns)}"
    print(text)
    if record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "name": name,
            "rows": list(rows),
            **meta,
        }
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")
    return text


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ingest":
        sys.exit(_driver_main(sys.argv[2:]))
    sys.exit("usage: python -m tests.reliability_kit ingest SOURCE --group-id ID ...")
