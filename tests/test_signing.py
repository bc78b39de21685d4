"""SignerV4: the published vectors (api-reference.md §2.3) and sign -> verify round trips."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest

from chenyu_assets._core.signing import (
    EMPTY_BODY_SHA256,
    SERVICE,
    BearerAuth,
    Credentials,
    SignatureError,
    VerifiedRequest,
    canonical_query,
    canonical_request,
    derive_signing_key,
    sign_request,
    string_to_sign,
    verify_request,
)

AK = "AKLTEXAMPLEACCESSKEYID00000000000000"
SK = "EXAMPLESECRETKEYbase64ZZZ0000000000000000000=="
CREDS = Credentials(AK, SK)
NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
HOST = "open.volcengineapi.com"
JSON = {"Content-Type": "application/json", "Host": HOST}

V1_BODY = (
    b'{"Name": "my-character-group", "Description": "Character assets for Seedance", '
    b'"GroupType": "AIGC", "ProjectName": "default"}'
)
V1_QUERY = [("Action", "CreateAssetGroup"), ("Version", "2024-01-01")]
V2_BODY = b'{"Id":"asset-20260601120000-abcde","ProjectName":"default"}'
V2_QUERY = [("Action", "GetAsset"), ("Version", "2024-01-01")]
V2_SIGNATURE = "e287598aa7bf237c6d0ee9d7bca7df8805272488da8e2aa578c395e5d20a09bc"
V3_QUERY = [
    ("Action", "ListAssets"),
    ("Version", "2024-01-01"),
    ("Filter.Name", "a b*c~d/é"),
    ("PageSize", "10"),
]
V6_BODY = (
    b'{"Filter": {"GroupType": "AIGC", "Statuses": ["Active"]}, "PageNumber": 1, '
    b'"PageSize": 10, "ProjectName": "default"}'
)


def sign(
    *,
    method: str = "POST",
    query: list[tuple[str, str]] | None = None,
    headers: Mapping[str, str] = JSON,
    body: bytes = V1_BODY,
    region: str = "cn-beijing",
    credentials: Credentials = CREDS,
    now: datetime = NOW,
) -> dict[str, str]:
    added = sign_request(
        method=method,
        path="/",
        query=V1_QUERY if query is None else query,
        headers=headers,
        body=body,
        credentials=credentials,
        region=region,
        now=now,
    )
    return {**headers, **added}


def signature_of(headers: Mapping[str, str]) -> str:
    return headers["Authorization"].rsplit("Signature=", 1)[1]


def signed_list(headers: Mapping[str, str]) -> str:
    return headers["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0]


def verify(
    headers: Mapping[str, str],
    *,
    query: list[tuple[str, str]] | None = None,
    body: bytes = V1_BODY,
    now: datetime = NOW,
    method: str = "POST",
    allowed_regions: list[str] | None = None,
) -> VerifiedRequest:
    return verify_request(
        method=method,
        path="/",
        query=V1_QUERY if query is None else query,
        headers=headers,
        body=body,
        lookup_secret={AK: SK}.get,
        now=now,
        allowed_regions=allowed_regions,
    )


# --- published vectors ----------------------------------------------------------------------


def test_derived_key_and_empty_body_hash() -> None:
    key = derive_signing_key(SK, "20260601", "cn-beijing", SERVICE)
    assert key.hex() == "c08a1cf91cad6dad4a3f08f4a2c404a951ecf02cc76d7f55dce562d554b3a63f"
    assert hashlib.sha256(b"").hexdigest() == EMPTY_BODY_SHA256


def test_v1_create_asset_group() -> None:
    headers = sign()
    assert headers["X-Date"] == "20260601T120000Z"
    assert headers["X-Content-Sha256"] == (
        "1915e668ab54c4863e63c0cfe864eaa108744f53275cf34ee098dec49c23cf1f"
    )
    assert "X-Security-Token" not in headers
    assert headers["Authorization"] == (
        "HMAC-SHA256 Credential=AKLTEXAMPLEACCESSKEYID00000000000000/20260601/cn-beijing/ark/"
        "request, SignedHeaders=content-type;host;x-content-sha256;x-date, "
        "Signature=49f790ef47ee1957c3f70a5ba9440f2e3c85fbd60e85ff7d944dda0821a85e8f"
    )
    lowered = {k.lower(): v for k, v in headers.items()}
    canonical = canonical_request(
        method="POST",
        path="/",
        query=canonical_query(V1_QUERY),
        headers=lowered,
        signed_headers=["content-type", "host", "x-content-sha256", "x-date"],
        body_sha256=headers["X-Content-Sha256"],
    )
    to_sign = string_to_sign("20260601T120000Z", "20260601/cn-beijing/ark/request", canonical)
    hash_line = "53269f9cf6308f45cbdc833fbb2b34bc649c5caa201b0bb79c88d4ed7a5b9b94"
    assert to_sign.splitlines()[-1] == hash_line
    key = derive_signing_key(SK, "20260601", "cn-beijing")
    assert hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == signature_of(headers)


@pytest.mark.parametrize("host", [HOST, f"{HOST}:443", f"{HOST}:80"])
def test_v2_get_asset_default_ports_dropped(host: str) -> None:
    headers = sign(query=V2_QUERY, body=V2_BODY, headers={**JSON, "Host": host})
    assert headers["X-Content-Sha256"] == (
        "5301c659a64f1989364d5537e7af8fe563a2ee4e62663866962ffd7315075ab8"
    )
    assert signature_of(headers) == V2_SIGNATURE


def test_v3_get_with_encoded_query_and_empty_body() -> None:
    assert canonical_query(V3_QUERY) == (
        "Action=ListAssets&Filter.Name=a%20b%2Ac~d%2F%C3%A9&PageSize=10&Version=2024-01-01"
    )
    headers = sign(method="GET", query=V3_QUERY, headers={"Host": HOST}, body=b"")
    assert headers["X-Content-Sha256"] == EMPTY_BODY_SHA256
    assert signed_list(headers) == "host;x-content-sha256;x-date"
    assert signature_of(headers) == (
        "39d86a47f5948ff4c9d8ee2c91b6a18fd596b641bdff292ff707fe342a56a69c"
    )


def test_v3_query_as_mapping() -> None:
    headers = sign_request(
        method="GET",
        path="/",
        query=dict(V3_QUERY),
        headers={"Host": HOST},
        body=b"",
        credentials=CREDS,
        region="cn-beijing",
        now=NOW,
    )
    assert signature_of(headers).startswith("39d86a47")


SDK_HEADERS = {
    "X-Sdk-Invocation-Id": "00000000-0000-4000-8000-000000000001",
    "X-Sdk-Request": "attempt=1; max=1",
}


def test_v4_extra_sdk_headers_are_signed() -> None:
    headers = sign(headers={**JSON, **SDK_HEADERS})
    assert signed_list(headers) == (
        "content-type;host;x-content-sha256;x-date;x-sdk-invocation-id;x-sdk-request"
    )
    assert signature_of(headers) == (
        "96eaf50716d0d561c75cb8c80be7315a1cab65ac83de00713044c81483edfdab"
    )


def test_v5_host_with_port_is_kept() -> None:
    headers = sign(query=V2_QUERY, body=V2_BODY, headers={**JSON, "Host": "127.0.0.1:8765"})
    assert signature_of(headers) == (
        "cf399e5dd517670c929a3e879d63efa3efe073803663e59e438506a050931e0e"
    )


def test_v6_byteplus() -> None:
    host = {**JSON, "Host": "ark.ap-southeast-1.byteplusapi.com"}
    query = [("Action", "ListAssets"), ("Version", "2024-01-01")]
    headers = sign(query=query, body=V6_BODY, headers=host, region="ap-southeast-1")
    assert headers["X-Content-Sha256"] == (
        "74b3e4771674b87ff7799b195c713a111ce5e1fc7853dc28dd51432951ce4437"
    )
    assert headers["Authorization"] == (
        "HMAC-SHA256 Credential=AKLTEXAMPLEACCESSKEYID00000000000000/20260601/ap-southeast-1/"
        "ark/request, SignedHeaders=content-type;host;x-content-sha256;x-date, "
        "Signature=afa9337a9b09b5a50f430e5a52b5f86f588e8a425eeff95f3515658739a18ad1"
    )


# --- verification ---------------------------------------------------------------------------


def expect(code: str, headers: Mapping[str, str], **kw: Any) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(headers, **kw)
    assert info.value.code == code
    return info.value


def test_round_trip_and_case_insensitive_headers() -> None:
    headers = sign()
    assert verify(headers) == VerifiedRequest(
        AK, "cn-beijing", "ark", ("content-type", "host", "x-content-sha256", "x-date")
    )
    assert verify({k.upper(): v for k, v in headers.items()}).access_key == AK
    assert verify(headers, now=NOW + timedelta(minutes=14)).region == "cn-beijing"


def test_verify_uses_received_signed_headers() -> None:
    headers = sign(headers={**JSON, **SDK_HEADERS})
    assert verify(headers).signed_headers[-2:] == ("x-sdk-invocation-id", "x-sdk-request")
    # An unsigned X-* header added on the way (a proxy) does not break the signature.
    assert verify({**headers, "X-Forwarded-For": "10.0.0.1"}).access_key == AK


def test_tampering_is_detected() -> None:
    headers = sign()
    expect("SignatureDoesNotMatch", headers, body=V1_BODY + b" ")
    rehashed = {**headers, "X-Content-Sha256": hashlib.sha256(V1_BODY + b" ").hexdigest()}
    expect("SignatureDoesNotMatch", rehashed, body=V1_BODY + b" ")
    expect("SignatureDoesNotMatch", headers, query=[*V1_QUERY[:1], ("Version", "2024-01-02")])
    expect("SignatureDoesNotMatch", headers, query=[*V1_QUERY, ("ProjectName", "x")])
    expect("SignatureDoesNotMatch", {**headers, "Content-Type": "text/plain"})
    expect("SignatureDoesNotMatch", headers, method="PUT")
    sig = signature_of(headers)
    forged = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    bad = {**headers, "Authorization": headers["Authorization"].replace(sig, forged)}
    expect("SignatureDoesNotMatch", bad)
    garbage = {**headers, "Authorization": headers["Authorization"].replace(sig, "zz")}
    expect("SignatureDoesNotMatch", garbage)


def test_unknown_access_key() -> None:
    headers = sign(credentials=Credentials("AKLTUNKNOWN", SK))
    expect("InvalidAccessKey", headers)


@pytest.mark.parametrize("offset", [timedelta(minutes=20), timedelta(minutes=-20)])
def test_skewed_x_date(offset: timedelta) -> None:
    expect("InvalidTimestamp", sign(), now=NOW + offset)


@pytest.mark.parametrize("x_date", ["2026-06-01T12:00:00Z", "20261301T120000Z", ""])
def test_malformed_x_date(x_date: str) -> None:
    expect("InvalidTimestamp", {**sign(), "X-Date": x_date})


def test_missing_or_malformed_authorization() -> None:
    headers = sign()
    expect("MissingAuthenticationToken", {k: v for k, v in headers.items() if k != "Authorization"})
    without_sig = headers["Authorization"].rsplit(", Signature=", 1)[0]
    expect("MissingSignature", {**headers, "Authorization": without_sig})
    for value in ["Bearer abc", "HMAC-SHA256 nonsense", "HMAC-SHA256 Credential=a/b, Signature=1"]:
        expect("InvalidAuthorization", {**headers, "Authorization": value})


def test_scope_checks() -> None:
    headers = sign()
    expect("InvalidAuthorization", headers, allowed_regions=["ap-southeast-1"])
    assert verify(headers, allowed_regions=["cn-beijing"]).region == "cn-beijing"
    # Signed the day before but X-Date says today: the scope date must match X-Date.
    yesterday = sign(now=NOW - timedelta(days=1))
    expect("InvalidAuthorization", {**yesterday, "X-Date": headers["X-Date"]})
    no_date = headers["Authorization"].replace(";x-date", "")
    expect("InvalidAuthorization", {**headers, "Authorization": no_date})


def test_plus_for_space_in_query_is_accepted() -> None:
    query = [("Action", "ListAssets"), ("Filter.Name", "a b")]
    headers = sign(query=query)
    decoded = parse_qsl("Action=ListAssets&Filter.Name=a+b", keep_blank_values=True)
    assert verify(headers, query=decoded).access_key == AK


def test_session_token_must_be_signed() -> None:
    sts = Credentials(AK, SK, session_token="STS-TOKEN")
    headers = sign(credentials=sts)
    assert headers["X-Security-Token"] == "STS-TOKEN"
    assert "x-security-token" in verify(headers).signed_headers
    smuggled = {**sign(), "X-Security-Token": "STS-TOKEN"}
    expect("InvalidAuthorization", smuggled)


def test_no_secret_in_reprs_or_errors() -> None:
    secret, token = "CANARY-SECRET-3141", "CANARY-TOKEN-2718"
    creds = Credentials(AK, secret, session_token=token)
    for text in (repr(creds), str(creds)):
        assert secret not in text
        assert token not in text
        assert AK not in text
    headers = sign(credentials=creds)
    good_sig = signature_of(headers)
    forged = good_sig[::-1]
    cases = [
        {**headers, "Authorization": headers["Authorization"].replace(good_sig, forged)},
        {**headers, "X-Date": "garbage"},
        {k: v for k, v in headers.items() if k != "Authorization"},
    ]
    for case in cases:
        with pytest.raises(SignatureError) as info:
            verify_request(
                method="POST",
                path="/",
                query=V1_QUERY,
                headers=case,
                body=V1_BODY,
                lookup_secret={AK: secret}.get,
                now=NOW,
            )
        for text in (str(info.value), repr(info.value)):
            for canary in (secret, token, good_sig, forged):
                assert canary not in text


def test_bearer_auth() -> None:
    key = "cy_" + "a" * 28 + "beef"
    auth = BearerAuth(key)
    assert auth.header() == f"Bearer {key}"
    for text in (repr(auth), str(auth)):
        assert "cy_" not in text
        assert "beef" not in text
    with pytest.raises(ValueError, match="API key"):
        BearerAuth("bad key\n")


def test_credentials_validation_and_sign_needs_host() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Credentials(AK, "")
    with pytest.raises(ValueError, match="Host"):
        sign(headers={"Content-Type": "application/json"})
