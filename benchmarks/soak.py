"""Soak and crash under faults: does the ingest lose, duplicate or invent anything?

N small PNG files (2,000; ``--quick`` 300) go through the whole ingest — Chenyu upload,
CreateAsset, status polling — against the emulator in its own process (``chenyu-assets
serve``, time scale 10, every client rate scaled the same), with this fault mix on every
CreateAsset, GetAsset, ListAssets and Chenyu UploadAsset request (per request, from the
emulator's seeded RNG): 10 % 503 (half before the commit, half after it), 5 % connection
reset after the commit, 3 % hang past the client's 1 s read timeout (half after the
commit), 2 % 429 with ``Retry-After: 0.5``, and 1 s of list lag (new assets stay out of
ListAssets). The group actions are not faulted: the group is made once, before the run.

Rows:

* ``soak`` — one uninterrupted run;
* ``crash`` — the same on a fresh emulator, the ingest process SIGKILLed ``--kills`` times
  at seeded random moments, then rerun (faults still on) until it exits 0.

The ingest runs in a child process (``python -m tests.reliability_kit ingest``: the SDK's
``ingest()`` with the CLI's defaults, except a 1 s socket read timeout, a 2 s
reconciliation wait and results written as JSON lines).

Figures, computed from the emulator's audit, the journal and the results file:

* attempted — input items; active — last result active, journal active, an Active asset;
* failed — last result failed/skipped; lost — no terminal result, or active without an
  Active asset;
* duplicated — assets beyond the first with the same Name in the group;
* unexpected — assets whose Name matches no input item, plus failed items whose failure is
  not a media refusal (all inputs are valid media, so any failure here is a fault's);
* recovered — ambiguous creates whose asset reconciliation found (the runs' reports);
  committed_unanswered (audit) — assets whose CreateAsset got no usable answer.

Pass: lost 0, duplicated 0, unexpected 0, recovered ≥ 1, journal ``integrity_check`` ok.

    python benchmarks/soak.py            # 2,000 items, 2 kills (a few minutes)
    python benchmarks/soak.py --quick    # 300 items, 1 kill (about a minute)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import parser, record, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import reliability_kit as rk  # (needs the repository root on sys.path)

COLUMNS = (
    "row",
    "attempted",
    "active",
    "failed",
    "lost",
    "duplicated",
    "unexpected",
    "recovered",
    "committed_unanswered",
    "requests",
    "faults",
    "creates_sent",
    "uploads_stored",
    "runs",
    "elapsed_s",
    "journal_integrity",
)


def main() -> int:
    p = parser(__doc__.split("\n\n", 1)[0])
    p.add_argument("--n", type=int, help="items (default 2000, quick 300)")
    p.add_argument("--kills", type=int, help="SIGKILLs in the crash row (default 2, quick 1)")
    p.add_argument("--seed", type=int, default=8)
    args = p.parse_args()
    n = args.n or (300 if args.quick else 2000)
    kills = args.kills if args.kills is not None else (1 if args.quick else 2)
    mix = rk.Mix()
    print(f"{n} items; fault mix: {mix.describe()}; crash row: {kills} SIGKILL(s)")
    rows = []
    outcomes = {}
    for label, k in (("soak", 0), (f"crash ×{kills}", kills)):
        with tempfile.TemporaryDirectory(prefix="chenyu-soak-") as tmp:
            out = rk.ingest_under_faults(Path(tmp), n, seed=args.seed + k, kills=k, mix=mix)
        outcomes[label] = out
        rows.append({"row": label, **out.figures.row()})
        print(f"  {label}: {out.figures.extra['elapsed_s']} s", flush=True)
    print()
    print(table(COLUMNS, [[r.get(c, "") for c in COLUMNS] for r in rows]))
    print()
    for name, meaning in rk.DEFINITIONS.items():
        print(f"  {name:<11} {meaning}")
    problems = [f"{label}: {p}" for label, o in outcomes.items() for p in o.figures.problems]
    for problem in problems[:20]:
        print("  !", problem)
    passed = all(
        o.figures.passed
        and o.figures.recovered >= 1
        and o.figures.extra["journal_integrity"] == "ok"
        and o.runs[-1].code == 0
        for o in outcomes.values()
    )
    totals = {k: sum(int(r[k]) for r in rows) for k in ("lost", "duplicated", "unexpected")}
    recovered = sum(int(r["recovered"]) for r in rows)
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: {n} items × {len(rows)} runs under faults: "
        f"lost {totals['lost']}, duplicated {totals['duplicated']}, "
        f"unexpected {totals['unexpected']}, recovered {recovered} (target 0/0/0, ≥ 1)"
    )
    record(
        "soak",
        args,
        {"n": n, "kills": kills, "mix": mix.describe(), "rows": rows},
        verdict,
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
