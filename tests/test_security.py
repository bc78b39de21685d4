"""Security (issue 8): secrets never leak, TLS is always verified, the emulator's signed
URLs and SigV4 check hold, and CreateAsset URLs never reach private addresses.

Covered elsewhere and not repeated here:
the upload cap enforced while streaming with bounded memory (a 200 MiB chunked body is
cut off near 100 MiB) and hostile multipart file names (test_emulator_chenyu.py), an
allow-listed host name that resolves to a private address (test_emulator_processing.py),
tampered SigV4 signatures and bodies (test_signing.py, test_emulator_ark.py).

``pytest -s`` prints the figures (mutations refused, connections seen, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import random
import re
import secrets
import sqlite3
import ssl
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import mediagen
import pytest
from aiohttp import web
from pydantic import BaseModel
from vclock import emulator_clock, virtual
from yarl import URL

import chenyu_assets
from chenyu_assets._core.pagination import Page
from chenyu_assets._core.retry import RetryPolicy
from chenyu_assets._core.signing import Credentials, sign_request
from chenyu_assets.ark import ArkClient
from chenyu_assets.avatar import PrivateAvatarClient
from chenyu_assets.batch import Event, IngestResult, SourceItem, ingest
from chenyu_assets.chenyu import ChenyuClient
from chenyu_assets.emulator import Account, Emulator, EmulatorConfig, FaultRule
from chenyu_assets.emulator.content import UrlSigner
from chenyu_assets.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    TLSVerificationError,
)
from tests import serve_kit

FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        width = max(map(len, FIGURES))
        print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in FIGURES.items()))


FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, max_elapsed=10.0)

# Canaries: shaped like nothing the redaction patterns know (no AKLT prefix, no cy_ key),
# so only "never passed to a log call, an error or a model" keeps them out.
AK = "AKCANARYACCESS7F3E9B2D"
SK = "CanarySecretKey+9d2f/4c1aB7e=="
TOKEN = "CanarySTSToken.5e8a7b3c9d"
BEARER = "CanaryBearerKey-a1b2c3d4e5f6"
WRONG_SK = "CanaryWrongSecret-0f9e8d7c6b"
WRONG_BEARER = "CanaryWrongBearer-11223344"
CANARIES = (AK, SK, TOKEN, BEARER, WRONG_SK, WRONG_BEARER)
CANARY_ACCOUNT = Account(name="canary", access_key=AK, secret_key=SK, api_key=BEARER)


def leaks(text: str | bytes) -> list[str]:
    """The canaries found in ``text`` (str or raw bytes)."""
    if isinstance(text, bytes):
        return [c for c in CANARIES if c.encode() in text]
    return [c for c in CANARIES if c in text]


def describe(obj: Any) -> str:
    """Every way an object shows itself: str, repr, and for an exception its whole chain
    (traceback text, and every attribute of every exception in it)."""
    parts = [str(obj), repr(obj)]
    if isinstance(obj, BaseException):
        parts.append("".join(traceback.format_exception(obj)))
        seen: BaseException | None = obj
        while seen is not None:
            parts.append(repr(vars(seen)))
            seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def journal_texts(journal: Path) -> tuple[str, bytes]:
    """Every column of every table of the journal, and the raw bytes of its files."""
    con = sqlite3.connect(journal)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [repr(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables]
    finally:
        con.close()
    raw = b"".join(
        p.read_bytes() for p in journal.parent.iterdir() if p.name.startswith(journal.name)
    )
    return "\n".join(rows), raw


async def outcome(call: Any) -> Any:
    try:
        return await call
    except Exception as exc:
        return exc


# -- canary credentials through every path, in process ---------------------------------------


@virtual
async def test_canary_credentials_never_leak_in_process(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # everything: ours, aiohttp's, asyncio's
    shown: list[Any] = []  # every object the user could print, log or dump
    src = tmp_path / "src"
    for i in range(3):
        mediagen.write(src / f"ok-{i}.png", mediagen.png(640 + i, 480))
    mediagen.write(src / "bad.png", mediagen.html())
    try:
        cfg = EmulatorConfig(accounts=[CANARY_ACCOUNT], processing_delay=0.05)
        async with (
            Emulator(cfg, clock=emulator_clock()) as emu,
            ArkClient(
                access_key=AK, secret_key=SK, session_token=TOKEN, base_url=emu.url, retry=FAST
            ) as ark,
            ArkClient(api_key=BEARER, base_url=emu.gateway_url, retry=FAST) as gateway,
            ChenyuClient(api_key=BEARER, base_url=emu.chenyu_url, retry=FAST) as chenyu,
            PrivateAvatarClient(api_key=BEARER, base_url=emu.avatar_url, retry=FAST) as avatar,
        ):
            shown += [ark, gateway, chenyu, avatar, emu]
            group = await ark.create_asset_group(name="canary")
            up = await chenyu.upload(src / "ok-0.png")
            again = await chenyu.get(up.asset_id)
            asset_id = await ark.create_asset(group_id=group, url=up.signed_url or "", name="a")
            active = await ark.wait_for_asset(asset_id, timeout=10, interval=0.05)
            bad = await ark.create_asset(group_id=group, url=emu.media_url("html"), name="b")
            failed = await outcome(ark.wait_for_asset(bad, timeout=10, interval=0.05))
            page = await ark.list_assets(group_ids=[group])
            groups = await ark.list_asset_groups()
            gw_group = await gateway.get_asset_group(group)
            av_group = await avatar.create_asset_group(name="av")
            shown += [up, again, active, failed, page, groups, gw_group, av_group, *page.items]
            # failures: retried 503s, an ambiguous create, 404s, refused credentials
            emu.set_faults([FaultRule(action="GetAsset", status=503, max_count=1)])
            shown.append(await ark.get_asset(asset_id))
            emu.set_faults([FaultRule(action="CreateAsset", kind="reset", phase="after")])
            shown.append(await outcome(ark.create_asset(group_id=group, url=up.url or "x")))
            emu.clear_faults()
            shown.append(await outcome(ark.get_asset("asset-20260101000000-zzzzz")))
            shown.append(await outcome(chenyu.get("asset_" + "0" * 32)))
            async with (
                ArkClient(access_key=AK, secret_key=WRONG_SK, base_url=emu.url, retry=FAST) as w1,
                ChenyuClient(api_key=WRONG_BEARER, base_url=emu.chenyu_url, retry=FAST) as w2,
                ArkClient(api_key=WRONG_BEARER, base_url=emu.gateway_url, retry=FAST) as w3,
            ):
                shown += [w1, w2, w3]
                shown.append(await outcome(w1.list_assets()))
                shown.append(await outcome(w2.upload(src / "ok-1.png")))
                shown.append(await outcome(w3.list_assets()))
            assert all(isinstance(e, AuthenticationError) for e in shown[-3:]), shown[-3:]
            with pytest.raises(ConfigurationError) as missing:
                ArkClient(access_key=AK)  # no secret key: the error names the variable
            shown.append(missing.value)
            shown += [vars(client) for client in (ark, gateway, chenyu, avatar)]
            # an ingest, with its journal, results, events and report
            events: list[Event] = []
            results: list[IngestResult] = []
            report = await ingest(
                ark,
                src,
                group_id=group,
                journal=tmp_path / "journal.db",
                chenyu=chenyu,
                on_event=events.append,
                on_result=results.append,
            )
            shown += [report, *events, *results, *(r.to_json() for r in results)]
            assert report.active == 3
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    texts = {"logs": stream.getvalue()}
    assert "DEBUG chenyu_assets.http POST" in texts["logs"]  # DEBUG really was on
    model_count = 0
    for i, obj in enumerate(shown):
        texts[f"object {i} {type(obj).__name__}"] = describe(obj)
        for model in _models_in(obj):
            model_count += 1
            texts[f"model {model_count} {type(model).__name__}"] = "\n".join(
                [repr(model), str(model.model_dump()), model.model_dump_json()]
            )
    journal_rows, journal_raw = journal_texts(tmp_path / "journal.db")
    texts["journal rows"] = journal_rows
    found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
    assert found == {}
    assert leaks(journal_raw) == []
    kinds = {type(m).__name__ for o in shown for m in _models_in(o)}
    assert kinds >= {"Asset", "AssetGroup", "ChenyuAsset", "AssetErrorDetail"}
    FIGURES["canaries, in process"] = (
        f"0 leaks in {len(stream.getvalue().splitlines())} DEBUG log lines, "
        f"{len(shown)} objects, {model_count} model dumps, journal rows and bytes"
    )


def _models_in(obj: Any) -> Iterator[BaseModel]:
    """The pydantic models in ``obj``: itself, a page's items, an asset's ``Error``."""
    if isinstance(obj, BaseModel):
        yield obj
        for value in vars(obj).values():
            yield from _models_in(value)
    elif isinstance(obj, Page):
        for item in obj.items:
            yield from _models_in(item)


# -- canary credentials through the CLI --------------------------------------------------------


@contextlib.contextmanager
def serve(tmp: Path, *args: str) -> Iterator[str]:
    """``chenyu-assets serve`` in its own process (its banner prints the demo credentials
    on purpose; that output is the server's, and not checked)."""
    with serve_kit.serve("--time-scale", "10", "--data-dir", str(tmp / "emu"), *args) as s:
        yield s.url


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chenyu_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.subprocess
def test_canary_credentials_never_leak_from_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(4):
        mediagen.write(src / f"ok-{i}.png", mediagen.png(700, 500 + i))
    mediagen.write(src / "page.png", mediagen.html())
    creds = ["--access-key", AK, "--secret-key", SK, "--api-key", BEARER]
    with serve(tmp_path, *creds) as url:
        base_env = {
            **os.environ,
            "VOLC_ACCESSKEY": AK,
            "VOLC_SECRETKEY": SK,
            "VOLC_SESSION_TOKEN": TOKEN,
            "ARK_BASE_URL": url,
            "CHENYU_API_KEY": BEARER,
            "CHENYU_BASE_URL": url + "/api/open/v2",
        }
        runs: dict[str, tuple[subprocess.CompletedProcess[str], Path]] = {}
        for name, env_changes, expected in [
            ("ok", {}, 3),  # one bad item: exit 3
            ("wrong secret", {"VOLC_SECRETKEY": WRONG_SK}, 4),
            ("wrong api key", {"CHENYU_API_KEY": WRONG_BEARER}, 4),
        ]:
            journal = tmp_path / f"{name}.db"
            out = tmp_path / f"{name}.jsonl"
            args = ["-vv", "ingest", str(src), "--group", f"cli-{name}", "--journal", str(journal)]
            args += ["--out", str(out), "--json", "--no-progress", "--rate-scale", "10"]
            proc = run_cli(args, {**base_env, **env_changes})
            assert proc.returncode == expected, (name, proc.stderr[-2000:])
            runs[name] = (proc, journal)
    lines = 0
    for name, (proc, journal) in runs.items():
        # -vv really logs (the transport's line, named by its action)
        assert re.search(r"DEBUG chenyu_assets\.http: \w+: POST", proc.stderr), name
        lines += len(proc.stderr.splitlines())
        texts = {"stdout": proc.stdout, "stderr": proc.stderr}
        out = tmp_path / f"{name}.jsonl"
        if out.exists():
            texts["--out"] = out.read_text()
        if journal.exists():
            texts["journal rows"], raw = journal_texts(journal)
            assert leaks(raw) == [], name
        found = {where: leaks(text) for where, text in texts.items() if leaks(text)}
        assert found == {}, name
    assert "SignatureDoesNotMatch" in runs["wrong secret"][0].stderr
    assert "401" in runs["wrong api key"][0].stderr
    FIGURES["canaries, CLI -vv"] = f"0 leaks in 3 runs ({lines} lines of output), --out, journals"


# -- TLS ------------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography if installed, else openssl)."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode:
            pytest.skip("neither cryptography nor openssl is available")
        command = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        command += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"]
        command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        subprocess.run(["openssl", *command], check=True, capture_output=True)
        return cert, key
    import ipaddress

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@contextlib.asynccontextmanager
async def tls_emulator(tmp: Path, *, virtual_clock: bool) -> AsyncIterator[tuple[Emulator, Path]]:
    """An HTTPS emulator with a self-signed certificate (on the test's virtual clock if
    ``virtual_clock``)."""
    cert, key = self_signed(tmp)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    clock = emulator_clock() if virtual_clock else None
    cfg = EmulatorConfig(processing_delay=0.05)
    async with Emulator(cfg, ssl_context=context, clock=clock) as emu:
        yield emu, cert


@pytest.fixture
async def tls_emu(tmp_path: Path) -> AsyncIterator[tuple[Emulator, Path]]:
    async with tls_emulator(tmp_path, virtual_clock=False) as running:
        yield running


@virtual
async def test_self_signed_tls_is_refused_by_default_and_trusted_with_a_ca_bundle(
    tmp_path: Path,
) -> None:
    async with tls_emulator(tmp_path, virtual_clock=True) as (emu, cert):
        await _tls_refused_then_trusted(emu, cert)


async def _tls_refused_then_trusted(emu: Emulator, cert: Path) -> None:
    assert emu.url.startswith("https://127.0.0.1:")
    acct = emu.account
    async with (
        ArkClient(access_key=acct.access_key, secret_key=acct.secret_key, base_url=emu.url) as ark,
        ChenyuClient(api_key=acct.api_key, base_url=emu.chenyu_url) as chenyu,
    ):
        refused = await outcome(ark.list_asset_groups())
        refused_up = await outcome(chenyu.upload_bytes(mediagen.png(64, 64), filename="a.png"))
        assert isinstance(refused, TLSVerificationError), refused
        assert isinstance(refused_up, TLSVerificationError), refused_up
        assert ark.stats.requests == chenyu.stats.requests == 1  # never retried
    assert emu.audit().requests == []  # no request got through the handshake
    async with (
        ArkClient(
            access_key=acct.access_key,
            secret_key=acct.secret_key,
            base_url=emu.url,
            ca_bundle=str(cert),
        ) as ark,
        ChenyuClient(api_key=acct.api_key, base_url=emu.chenyu_url, ca_bundle=str(cert)) as chenyu,
    ):
        group = await ark.create_asset_group(name="tls")
        up = await chenyu.upload_bytes(mediagen.png(800, 800), filename="a.png")
        asset = await ark.create_asset(group_id=group, url=up.signed_url or "", name="a")
        assert (await ark.wait_for_asset(asset, timeout=10, interval=0.05)).status == "Active"
    with pytest.raises(ConfigurationError, match="ca_bundle"):
        async with ArkClient(access_key="AKLTX0000", secret_key="s" * 20, ca_bundle="/nope.pem"):
            pass
    FIGURES["TLS"] = "self-signed refused (TLSVerificationError, 1 attempt); ca_bundle= trusts it"


@pytest.mark.subprocess
@pytest.mark.anyio
async def test_cli_verifies_tls_and_takes_a_ca_bundle(
    tls_emu: tuple[Emulator, Path], tmp_path: Path
) -> None:
    emu, cert = tls_emu
    acct = emu.account
    src = tmp_path / "src"
    mediagen.write(src / "a.png", mediagen.png(800, 600))
    env = {
        **os.environ,
        "VOLC_ACCESSKEY": acct.access_key,
        "VOLC_SECRETKEY": acct.secret_key,
        "ARK_BASE_URL": emu.url,
        "CHENYU_API_KEY": acct.api_key,
        "CHENYU_BASE_URL": emu.chenyu_url,
    }
    env.pop("SSL_CERT_FILE", None)
    codes = {}
    for name, extra, extra_env in [
        ("default", [], {}),
        ("--ca-bundle", ["--ca-bundle", str(cert)], {}),
        ("SSL_CERT_FILE", [], {"SSL_CERT_FILE": str(cert)}),
    ]:
        args = ["ingest", str(src), "--group", "tls", "--journal", str(tmp_path / f"{name}.db")]
        args += ["--no-progress", *extra]
        proc = await anyio.run_process(
            [sys.executable, "-m", "chenyu_assets.cli", *args],
            env={**env, **extra_env},
            check=False,
        )
        codes[name] = (proc.returncode, proc.stderr.decode())
    assert codes["default"][0] == 4
    assert "certificate" in codes["default"][1].lower()
    assert codes["--ca-bundle"][0] == 0, codes["--ca-bundle"][1]
    assert codes["SSL_CERT_FILE"][0] == 0, codes["SSL_CERT_FILE"][1]
    FIGURES["TLS, CLI"] = "exit 4 by default; exit 0 with --ca-bundle or SSL_CERT_FILE"


def test_no_tls_verification_switch_anywhere_in_the_package() -> None:
    package = Path(chenyu_assets.__file__).parent
    patterns = [
        r"ssl\s*=\s*False",
        r"verify(_ssl)?\s*=\s*False",
        r"CERT_NONE",
        r"VERIFY_NONE",
        r"check_hostname\s*=\s*False",
        r"_create_unverified_context",
        r"verify_mode",
        r"PYTHONHTTPSVERIFY",
    ]
    hits = []
    files = sorted(package.rglob("*.py"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        hits += [f"{path.name}: {p}" for p in patterns if re.search(p, text)]
    assert hits == []
    assert len(files) > 40
    FIGURES["TLS switches in the package"] = f"0 in {len(files)} files"


# -- the emulator's signed URLs ---------------------------------------------------------------

HEX = "0123456789abcdef"
Query = list[tuple[str, str]]


def _get(q: Query, key: str) -> str:
    return next((v for k, v in q if k == key), "")


def _set(q: Query, key: str, value: str) -> Query:
    return [(k, value if k == key else v) for k, v in q]


def _edit(text: str, rng: random.Random, alphabet: str) -> str:
    """One random point edit: replace, delete or insert one character."""
    i = rng.randrange(len(text) + 1)
    how = rng.randrange(3) if i < len(text) else 2
    if how == 0:
        return text[:i] + rng.choice([c for c in alphabet if c != text[i]]) + text[i + 1 :]
    if how == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + rng.choice(alphabet) + text[i:]


def mutate(rng: random.Random, aid: str, q: Query, forged_kind_sig: str) -> tuple[str, Query, str]:
    """One to three random mutations of (asset id in the path, query); never a no-op."""
    while True:
        new_aid, new_q, names = aid, list(q), []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            sig, exp = _get(new_q, "signature"), _get(new_q, "expires")
            kind = rng.choice(MUTATIONS)
            names.append(kind)
            if kind == "signature: one character":
                new_q = _set(new_q, "signature", _edit(sig, rng, HEX))
            elif kind == "signature: case":
                new_q = _set(new_q, "signature", sig.upper() if rng.random() < 0.5 else sig.title())
            elif kind == "signature: cut or extended":
                cut = sig[: rng.randrange(len(sig))] if sig else ""
                more = sig + "".join(rng.choice(HEX) for _ in range(rng.randint(1, 8)))
                new_q = _set(new_q, "signature", rng.choice([cut, more]))
            elif kind == "signature: random":
                new_q = _set(new_q, "signature", secrets.token_hex(32))
            elif kind == "signature: other kind's":
                new_q = _set(new_q, "signature", forged_kind_sig)
            elif kind == "signature: foreign characters":
                new_q = _set(new_q, "signature", _edit(sig, rng, "gzG é０\t-_.~%+=&"))
            elif kind == "expires: shifted":
                value = (int(exp) if exp.isdigit() else 0) + rng.choice((1, -1)) * rng.randint(
                    1, 10**8
                )
                new_q = _set(new_q, "expires", str(value))
            elif kind == "expires: digits":
                new_q = _set(new_q, "expires", _edit(exp, rng, "0123456789"))
            elif kind == "expires: zero-padded":
                new_q = _set(new_q, "expires", "0" * rng.randint(1, 3) + exp)
            elif kind == "expires: junk":
                new_q = _set(new_q, "expires", _edit(exp, rng, " +-.eEx_٣０"))
            elif kind == "id: one character":
                new_aid = _edit(new_aid, rng, HEX + "_-xyzXYZ")
            elif kind == "id: case":
                letters = [i for i, c in enumerate(new_aid) if c.isalpha()]
                i = rng.choice(letters)
                new_aid = new_aid[:i] + new_aid[i].swapcase() + new_aid[i + 1 :]
            elif kind == "param: repeated":
                key = rng.choice(("expires", "signature"))
                value = rng.choice([_get(new_q, key), _edit(_get(new_q, key), rng, HEX)])
                new_q.insert(rng.randrange(len(new_q) + 1), (key, value))
            elif kind == "param: extra":
                name = rng.choice(["x", "download", "kind", "Expires", "SIGNATURE", "sig", ""])
                new_q.insert(rng.randrange(len(new_q) + 1), (name, rng.choice(["1", "", exp])))
            elif kind == "param: name case" and new_q:
                i = rng.randrange(len(new_q))
                key, value = new_q[i]
                new_q[i] = (rng.choice([key.upper(), key.title(), key + " "]), value)
            elif kind == "param: dropped" and new_q:
                del new_q[rng.randrange(len(new_q))]
        if (new_aid, new_q) != (aid, q):
            return new_aid, new_q, names[0]


MUTATIONS = (
    "signature: one character",
    "signature: case",
    "signature: cut or extended",
    "signature: random",
    "signature: other kind's",
    "signature: foreign characters",
    "expires: shifted",
    "expires: digits",
    "expires: zero-padded",
    "expires: junk",
    "id: one character",
    "id: case",
    "param: repeated",
    "param: extra",
    "param: name case",
    "param: dropped",
)


def query_text(q: Query) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in q)


def parsed(base: str, aid: str, q: Query) -> tuple[str | None, Any]:
    """What the server sees: the id in the path and the query multidict (yarl, as aiohttp)."""
    url = URL(f"{base}/assets/{quote(aid, safe='')}/content?{query_text(q)}", encoded=True)
    parts = url.path.split("/")
    return (parts[2] if len(parts) == 4 else None), url.query


def test_ten_thousand_mutated_signed_urls_are_all_refused() -> None:
    signer = UrlSigner(secrets.token_bytes(32))
    aid = "asset_" + secrets.token_hex(16)
    now = time.time()
    expires = int(now) + 3600
    valid: Query = [
        ("expires", str(expires)),
        ("signature", signer.signature("chenyu", aid, expires)),
    ]
    forged = signer.signature("ark", aid, expires)
    path_id, query = parsed("http://h", aid, valid)
    assert path_id == aid
    assert signer.check("chenyu", aid, query, now) is None  # the genuine URL passes
    rng = random.Random(20260601)
    tried: dict[str, int] = dict.fromkeys(MUTATIONS, 0)
    accepted = []
    for _ in range(10_000):
        new_aid, new_q, kind = mutate(rng, aid, valid, forged)
        tried[kind] += 1
        path_id, query = parsed("http://h", new_aid, new_q)
        if path_id is not None and signer.check("chenyu", path_id, query, now) is None:
            accepted.append((kind, new_aid, new_q))
    assert accepted == []
    assert min(tried.values()) > 300  # every kind of mutation was tried many times
    FIGURES["signed URL mutations (in process)"] = (
        f"10000 tried, 0 accepted ({len(MUTATIONS)} kinds, each >= {min(tried.values())})"
    )


@virtual
async def test_mutated_signed_urls_over_http(tmp_path: Path) -> None:
    async with (
        Emulator(EmulatorConfig(processing_delay=0.05), clock=emulator_clock()) as emu,
        ChenyuClient(api_key=emu.account.api_key, base_url=emu.chenyu_url) as chenyu,
        ArkClient(
            access_key=emu.account.access_key,
            secret_key=emu.account.secret_key,
            base_url=emu.url,
        ) as ark,
        aiohttp.ClientSession() as session,
    ):
        up = await chenyu.upload_bytes(mediagen.png(800, 800), filename="a.png")
        group = await ark.create_asset_group(name="g")
        asset_id = await ark.create_asset(group_id=group, url=up.signed_url or "", name="a")
        asset = await ark.wait_for_asset(asset_id, timeout=10, interval=0.05)
        statuses: dict[int, int] = {}
        for signed, prefix in ((up.signed_url, "/assets/"), (asset.url, "/ark/assets/")):
            assert signed
            url = URL(signed)
            async with session.get(url) as resp:
                assert resp.status == 200  # the genuine URL works
            aid = url.path.split("/")[-2]
            valid: Query = list(url.query.items())
            base = str(url.origin()) + prefix.removesuffix("/assets/")
            rng = random.Random(7 if prefix == "/assets/" else 8)
            for _ in range(200):
                new_aid, new_q, _kind = mutate(rng, aid, valid, "0" * 64)
                target = f"{base}/assets/{quote(new_aid, safe='')}/content?{query_text(new_q)}"
                async with session.get(URL(target, encoded=True)) as resp:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    assert resp.status in (403, 404), (target, resp.status)
    FIGURES["signed URL mutations (HTTP)"] = f"400 tried, 0 served (statuses {statuses})"


# -- SigV4 replay ------------------------------------------------------------------------------


@virtual
async def test_sigv4_replay_inside_and_outside_the_skew_window() -> None:
    """SigV4 has no nonce: inside the server's skew window (15 min) a captured request
    replays as often as it is sent (a replayed CreateAssetGroup makes a second group;
    TLS is what keeps requests from being captured). Outside the window it is refused."""
    # the emulator's own clock: it follows the live clock_offset_seconds (signatures are
    # checked against real wall time, which virtual time does not move)
    async with Emulator(EmulatorConfig()) as emu, aiohttp.ClientSession() as session:
        acct = emu.account
        url = URL(emu.url).with_query(Action="CreateAssetGroup", Version="2024-01-01")
        body = json.dumps({"Name": "replayed"}).encode()
        headers = {"Content-Type": "application/json", "Host": url.raw_authority}
        headers.update(
            sign_request(
                method="POST",
                path="/",
                query=list(url.query.items()),
                headers=headers,
                body=body,
                credentials=Credentials(acct.access_key, acct.secret_key),
                region="cn-beijing",
            )
        )

        async def send() -> tuple[int, dict[str, Any]]:
            async with session.post(url, data=body, headers=headers) as resp:
                return resp.status, await resp.json()

        first, replay = await send(), await send()
        assert first[0] == replay[0] == 200
        assert first[1]["Result"]["Id"] != replay[1]["Result"]["Id"]  # a second group
        skew = emu.config.max_skew_seconds
        refused = []
        for offset in (skew + 60, -(skew + 60)):
            emu.config.clock_offset_seconds = offset
            status, reply = await send()
            refused.append((status, reply["ResponseMetadata"]["Error"]["Code"]))
        assert refused == [(400, "InvalidTimestamp")] * 2
        assert len(emu.audit().groups) == 2
    FIGURES["SigV4 replay"] = (
        f"accepted inside the {skew:g} s window (a 2nd group was created); "
        "InvalidTimestamp once the clock is past it either way"
    )


# -- CreateAsset URLs never reach private addresses --------------------------------------------


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def web_server(routes: dict[str, Any]) -> AsyncIterator[tuple[int, list[str]]]:
    """A tiny aiohttp.web server on 127.0.0.1; ``routes`` maps a path to a handler."""
    seen: list[str] = []

    def wrap(handler: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append(request.path)
            result: web.StreamResponse = await handler(request)
            return result

        return handle

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, wrap(handler))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


async def create_and_settle(ark: ArkClient, group: str, url: str, name: str) -> str:
    """Create an asset from ``url``; its final status and error code (or the refusal)."""
    try:
        asset_id = await ark.create_asset(group_id=group, url=url, name=name)
    except BadRequestError as exc:
        return f"refused {exc.code}"
    asset = await outcome(ark.wait_for_asset(asset_id, timeout=10, interval=0.05))
    if isinstance(asset, Exception):
        return f"Failed {getattr(asset, 'code', type(asset).__name__)}"
    return str(asset.status)


@virtual
async def test_createasset_urls_never_reach_private_addresses() -> None:
    async with listener() as (port, accepted):
        targets = [
            f"http://127.0.0.1:{port}/a.png",
            f"http://localhost:{port}/a.png",
            f"http://0.0.0.0:{port}/a.png",
            f"http://127.1:{port}/a.png",
            f"http://2130706433:{port}/a.png",
            f"http://[::ffff:127.0.0.1]:{port}/a.png",
            f"http://[::1]:{port}/a.png",
            "http://169.254.169.254/latest/meta-data/a.png",
            "http://10.0.0.1/a.png",
            "http://192.168.1.1/a.png",
            "file:///etc/passwd",
            f"gopher://127.0.0.1:{port}/_x",
            f"ftp://127.0.0.1:{port}/a.png",
        ]
        cfg = EmulatorConfig(processing_delay=0.05, fetch_timeout=3)
        async with Emulator(cfg, clock=emulator_clock()) as emu:
            acct = emu.account
            async with ArkClient(
                access_key=acct.access_key, secret_key=acct.secret_key, base_url=emu.url
            ) as ark:
                group = await ark.create_asset_group(name="ssrf")
                outcomes = {
                    url: await create_and_settle(ark, group, url, f"t{i}")
                    for i, url in enumerate(targets)
                }
                # the SDK's own ingest refuses them before CreateAsset is even sent
                items = [SourceItem(f"k{i}", None, url) for i, url in enumerate(targets)]
                results: list[IngestResult] = []
                creates = emu.audit().count("CreateAsset")
                await ingest(ark, items, group_id=group, on_result=results.append)
                assert emu.audit().count("CreateAsset") == creates
        for url, got in outcomes.items():
            assert got in (
                "Failed InvalidParameter.DownloadFailed",
                "refused InvalidParameter.URL",
            ), (
                url,
                got,
            )
        assert {r.error_code for r in results} == {"bad_url"}
        assert accepted == []  # not one connection reached the listener
    FIGURES["CreateAsset to private/loopback/file"] = (
        f"{len(targets)} URLs refused (emulator) and {len(results)} refused by the SDK; "
        "0 connections seen"
    )


@virtual
async def test_redirect_from_an_allow_listed_host_to_a_private_one_is_not_followed() -> None:
    png = mediagen.png(800, 800)

    async with listener() as (private_port, accepted):

        async def to_private(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"http://127.0.0.1:{private_port}/a.png")

        async def to_file(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("file:///etc/passwd")

        async def to_self(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("/image.png")

        async def image(request: web.Request) -> web.StreamResponse:
            return web.Response(body=png, content_type="image/png")

        routes = {"/to-private": to_private, "/to-file": to_file, "/to-self": to_self}
        async with web_server({**routes, "/image.png": image}) as (port, seen):
            cfg = EmulatorConfig(processing_delay=0.05, fetch_allowlist=(f"127.0.0.1:{port}",))
            async with Emulator(cfg, clock=emulator_clock()) as emu:
                acct = emu.account
                async with ArkClient(
                    access_key=acct.access_key, secret_key=acct.secret_key, base_url=emu.url
                ) as ark:
                    group = await ark.create_asset_group(name="redirects")
                    got = {
                        path: await create_and_settle(
                            ark, group, f"http://127.0.0.1:{port}{path}", path.strip("/")
                        )
                        for path in ("/image.png", "/to-self", "/to-private", "/to-file")
                    }
    assert got == {
        "/image.png": "Active",  # the allow-listed host itself is fetched (the control)
        "/to-self": "Active",  # and a redirect within it is followed
        "/to-private": "Failed InvalidParameter.DownloadFailed",
        "/to-file": "Failed InvalidParameter.DownloadFailed",
    }
    assert sorted(seen) == sorted(
        ["/image.png", "/to-self", "/image.png", "/to-private", "/to-file"]
    )
    assert accepted == []  # the redirect target never saw a connection
    FIGURES["redirect to a private address"] = "not followed; 0 connections at the target"
