"""Unit tests of the emulator's building blocks (no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chenyu_assets.emulator import (
    Account,
    Audit,
    AuditAsset,
    Clock,
    EmulatorConfig,
    FaultRule,
    RequestRecord,
)
from chenyu_assets.emulator.chenyu import clean_filename
from chenyu_assets.emulator.content import UrlSigner, parse_sample_path
from chenyu_assets.emulator.faults import FaultEngine
from chenyu_assets.emulator.guard import RateLimiter
from chenyu_assets.emulator.wire import ApiError, code_for_status, unflatten_query


def rec(
    t: float, action: str = "CreateAsset", status: int = 200, account: str = "a"
) -> RequestRecord:
    return RequestRecord(t=t, family="ark", action=action, account=account, status=status)


def test_audit_max_in_window_counts_only_accepted() -> None:
    audit = Audit(
        requests=[
            rec(0.0),
            rec(0.5),
            rec(0.99),
            rec(1.0),
            rec(1.2, status=429),
            rec(1.5),
            rec(0.1, action="GetAsset"),
            rec(0.2, account="b"),
        ]
    )
    assert audit.max_in_window("CreateAsset") == 4  # 0.0, 0.2(b), 0.5, 0.99
    assert audit.max_in_window("CreateAsset", account="a") == 3  # [0.5, 1.5) holds 0.5 .. 1.0
    assert audit.max_in_window("CreateAsset", window=0.1) == 2  # 0.99 and 1.0
    assert audit.max_in_window("Nothing") == 0
    assert audit.count("CreateAsset") == 7
    assert audit.count("CreateAsset", 429) == 1


def test_audit_duplicates_are_per_group() -> None:
    def asset(i: str, name: str, group: str, account: str = "a") -> AuditAsset:
        return AuditAsset(
            id=i,
            name=name,
            group_id=group,
            account=account,
            project="default",
            status="Active",
            asset_type="Image",
            url="u",
        )

    audit = Audit(
        assets=[
            asset("1", "x", "g1"),
            asset("2", "x", "g1"),
            asset("3", "x", "g2"),
            asset("4", "y", "g2"),
            asset("5", "z", "g3", account="b"),
            asset("6", "z", "g3", account="b"),
        ]
    )
    assert audit.duplicates() == {"x": ["1", "2"], "z": ["5", "6"]}
    assert audit.duplicates(account="a") == {"x": ["1", "2"]}


def make_limiter(strategy: str, rate: float = 3.0, scale: float = 1.0) -> RateLimiter:
    return RateLimiter(rates=lambda: {"A": rate}, scale=lambda: scale, strategy=lambda: strategy)


def test_sliding_window_is_strict() -> None:
    lim = make_limiter("sliding")
    assert [lim.try_acquire("x", "A", t) for t in (0.0, 0.1, 0.2, 0.3)] == [True] * 3 + [False]
    assert not lim.try_acquire("x", "A", 0.99)
    assert lim.try_acquire("x", "A", 1.0)  # 0.0 left the window (t - 1, t]
    assert not lim.try_acquire("x", "A", 1.05)
    assert lim.try_acquire("y", "A", 1.05)  # other account
    assert lim.try_acquire("x", "B", 1.05)  # unlimited action
    lim.refund("x", "A", 1.0)
    assert lim.try_acquire("x", "A", 1.06)


def test_token_bucket_refills_continuously() -> None:
    lim = make_limiter("token_bucket", rate=10)
    assert sum(lim.try_acquire("x", "A", 0.0) for _ in range(15)) == 10
    assert sum(lim.try_acquire("x", "A", 0.5) for _ in range(10)) == 5
    assert make_limiter("sliding", rate=30, scale=2.5).capacity("A") == 75


def test_fault_engine_is_seeded_and_counts() -> None:
    rules = [
        FaultRule(action="GetAsset", probability=0.5),
        FaultRule(kind="reset", probability=0.5, max_count=2),
        FaultRule(kind="list_lag", delay=1),
        FaultRule(kind="stuck", family="gateway"),
    ]

    def run(seed: int) -> list[str | None]:
        engine = FaultEngine(seed, rules)
        return [(r.kind if (r := engine.pick("ark", "GetAsset")) else None) for _ in range(40)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1).count("reset") <= 2
    engine = FaultEngine(0, rules)
    assert engine.pick("ark", "ListAssets") is not None  # list_lag applies (if reset misses)
    assert FaultEngine(0, [rules[3]]).pick("ark", "CreateAsset") is None  # family filter
    assert FaultEngine(0, [rules[3]]).pick("gateway", "CreateAsset") is rules[3]
    assert FaultEngine(0, [rules[2]]).pick("ark", "GetAsset") is None  # list_lag: lists only


def test_clock_scale_offset_and_advance() -> None:
    mono = [100.0]
    wall = [1_000_000.0]
    scale = [1.0]
    offset = [0.0]
    clock = Clock(
        scale=lambda: scale[0],
        offset=lambda: offset[0],
        monotonic=lambda: mono[0],
        wall=lambda: wall[0],
    )
    assert clock.now() == 1_000_000.0
    mono[0] += 10
    assert clock.elapsed() == 10
    assert clock.now() == 1_000_010.0
    scale[0] = 10.0
    mono[0] += 1
    assert clock.now() == 1_000_020.0  # re-anchored: no jump when the scale changed
    clock.advance(5)
    offset[0] = 3
    assert clock.now() == 1_000_028.0
    assert clock.signing_now().timestamp() == 1_000_003.0  # real wall + offset only
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


def test_url_signer() -> None:
    signer = UrlSigner(b"k" * 32)
    q = {"expires": "2000", "signature": signer.signature("chenyu", "asset_1", 2000)}
    assert signer.check("chenyu", "asset_1", q, now=1999) is None
    assert signer.check("chenyu", "asset_1", q, now=2001) == "the signed URL has expired"
    assert signer.check("ark", "asset_1", q, now=1999) is not None  # kinds don't mix
    assert signer.check("chenyu", "asset_2", q, now=1999) is not None
    assert signer.check("chenyu", "asset_1", {**q, "signature": "é"}, now=1) is not None
    assert signer.check("chenyu", "asset_1", {**q, "expires": "2e3"}, now=1) is not None
    with pytest.raises(ValueError, match="16 bytes"):
        UrlSigner(b"short")


def test_unflatten_query() -> None:
    params = unflatten_query(
        [
            ("Action", "ListAssets"),
            ("Filter.Name", "a b"),
            ("Filter.GroupIds.2", "g2"),
            ("Filter.GroupIds.1", "g1"),
            ("PageSize", "10"),
        ]
    )
    assert params.as_dict() == {
        "Filter": {"Name": "a b", "GroupIds": ["g1", "g2"]},
        "PageSize": 10,
    }
    with pytest.raises(ApiError):
        unflatten_query([("A", "1"), ("A.B", "2")])


def test_sample_paths() -> None:
    spec = parse_sample_path("/_emulator/media/mp4/1280x720.mp4", {"duration": "3", "fps": "25"})
    assert spec is not None
    assert (spec.width, spec.height, spec.duration, spec.fps) == (
        1280,
        720,
        3.0,
        25.0,
    )
    for bad in ("/_emulator/media/exe/1x1.exe", "/_emulator/media/png/big.png", "/x/y"):
        assert parse_sample_path(bad, {}) is None
    assert parse_sample_path("/_emulator/media/png/99999x1.png", {}) is None
    assert parse_sample_path("/_emulator/media/png/10x10.png", {"duration": "nan!"}) is None


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path.png", "path.png"),
        ("..\\..\\win.ini", "win.ini"),
        ("a\x00b\x1fc.png", "abc.png"),
        ("..", "upload"),
        (None, "upload"),
        ("x" * 300, "x" * 255),
        ("\udcff\udcfe.png", "\ufffd\ufffd.png"),
    ],
)
def test_clean_filename(raw: str | None, clean: str) -> None:
    assert clean_filename(raw) == clean


def test_config_validation_and_secret_redaction() -> None:
    account = Account(name="x", access_key="AK1", secret_key="SUPERSECRET", api_key="cy_k")
    assert "SUPERSECRET" not in repr(account)
    assert "cy_k" not in repr(account)
    with pytest.raises(ValidationError):
        EmulatorConfig(accounts=[account, account])
    with pytest.raises(ValidationError):
        EmulatorConfig(time_scale=0)
    with pytest.raises(ValidationError):
        Account(name="x", access_key="AK 1\n", secret_key="s", api_key="k")
    cfg = EmulatorConfig()
    with pytest.raises(ValidationError):
        cfg.window = "weekly"
    assert code_for_status(503) == "ServiceUnavailable"
    assert code_for_status(429) == "FlowLimitExceeded"
    assert code_for_status(502) == "BadGateway"


def test_processing_delays_are_seeded_and_scaled() -> None:
    from typing import Any, cast

    from chenyu_assets.emulator.processing import Processor

    def delays(seed: int, **settings: Any) -> list[float]:
        cfg = EmulatorConfig(**settings)
        unused = cast(Any, None)
        proc = Processor(
            store=unused,
            clock=unused,
            config=lambda: cfg,
            fetcher=unused,
            audit=unused,
            blob_dir=unused,
            seed=seed,
        )
        return [proc.delay() for _ in range(20)]

    first = delays(1, processing_delay=2.0, processing_jitter=0.5)
    assert first == delays(1, processing_delay=2.0, processing_jitter=0.5)
    assert first != delays(2, processing_delay=2.0, processing_jitter=0.5)
    assert all(1.5 <= d <= 2.5 for d in first)
    scaled = delays(1, processing_delay=2.0, processing_jitter=0.5, time_scale=4)
    assert scaled == [d / 4 for d in first]
    assert delays(1, processing_delay=0.1, processing_jitter=1.0).count(0.0) > 0  # clipped at 0


def test_audit_log_keeps_the_newest_records() -> None:
    from chenyu_assets.emulator.config import AuditLog

    log = AuditLog(max_records=3)
    for i in range(5):
        log.record(t=float(i), family="ark", action="A", account="a", status=200, code=None)
    snap = log.snapshot(groups=[], assets=[], uploads=[])
    assert [r.t for r in snap.requests] == [2.0, 3.0, 4.0]


def test_the_emulator_serves_what_the_spec_names() -> None:
    """The route table and the actions come from chenyu_assets.spec: every Ark action is
    implemented, every avatar route is served, and the gateway serves every action."""
    from chenyu_assets.emulator.actions import ACTIONS, GATEWAY_ACTIONS
    from chenyu_assets.emulator.routes import ROUTES
    from chenyu_assets.spec import (
        ARK_ACTIONS,
        AVATAR_PREFIX,
        AVATAR_ROUTES,
        CHENYU_PREFIX,
        GATEWAY_PREFIX,
    )

    assert set(ACTIONS) == set(GATEWAY_ACTIONS) == set(ARK_ACTIONS)
    served = {(method, path) for method, path, _handler in ROUTES}
    for method, path in AVATAR_ROUTES.values():
        assert (method, AVATAR_PREFIX + path) in served
    assert ("POST", f"{GATEWAY_PREFIX}/{{action}}") in served
    assert ("POST", f"{CHENYU_PREFIX}/assets") in served
    assert {("POST", "/"), ("GET", "/")} <= served


def test_every_fault_kind_is_defined_once_in_the_registry() -> None:
    """FaultRule accepts exactly the registry's kinds, documents each, and the pipeline's
    'replaces the answer' set is derived from it."""
    from chenyu_assets.emulator.faults import CONNECTION_KINDS, FAULTS

    for kind, fault in FAULTS.items():
        assert FaultRule(kind=kind).kind == kind
        assert f"``{kind}``" in (FaultRule.__doc__ or "")
        assert (kind in CONNECTION_KINDS) == (fault.send is not None)
    assert {"http_error", "reset", "close", "truncate", "hang"} <= CONNECTION_KINDS
    with pytest.raises(ValidationError):
        FaultRule(kind="teleport")


def test_the_emulator_has_no_import_cycle() -> None:
    """No emulator module imports one that (transitively) imports it back, counting every
    import statement (also those inside functions or under TYPE_CHECKING)."""
    import ast
    from pathlib import Path

    import chenyu_assets.emulator as package

    root = Path(package.__file__).parent
    names = {p.stem for p in root.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((root / f"{name}.py").read_text(encoding="utf-8"))
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
                if module == "chenyu_assets.emulator":  # the package: it imports server
                    graph[name] |= {"__init__"} | {a.name for a in node.names if a.name in names}
                elif module.startswith("chenyu_assets.emulator."):
                    graph[name].add(module.rsplit(".", 1)[1])
    graph["__init__"] = {"server"}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    assert len(names) >= 10  # the walk saw the package
    assert [n for n in sorted(names) if reaches(n, n)] == []
