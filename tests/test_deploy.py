"""The shipped deployment: real Debian nginx (deploy/nginx.conf) in front of a real gunicorn on a unix socket.

Slow clients (slowloris) used to take the whole site down: gunicorn has no
timeout for reading headers, so ten connections trickling header lines held
every worker thread. Through nginx, 50 such connections stay open while a
normal client's health check and search are answered.
"""

from __future__ import annotations

import json
import resource
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.proxy import (
    OTHER_CLIENT,
    SITE_CONF,
    Slowloris,
    deployment,
    nginx_binary,
    nginx_only,
    render_site,
)
from web.security import CONTENT_SECURITY_POLICY

pytestmark = [
    pytest.mark.slow,  # real nginx and gunicorn
    pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed: run scripts/install.sh"),
]

SECURITY_HEADERS = ("x-content-type-options", "content-security-policy", "referrer-policy", "x-frame-options")


def _multipart(photo: bytes, name: str = "42.jpg") -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def site(built_index, tmp_path_factory):
    extra = {"FASHION_THREADS": "4", "FASHION_RESCAN_SECONDS": "0"}
    folder = tmp_path_factory.mktemp("deploy")
    with deployment(folder, built_index.catalogue, built_index.index_dir, workers=1, extra_env=extra) as running:
        yield running


def test_the_shipped_config_is_what_runs():
    rendered = render_site(8080, SITE_CONF.parent / "x.sock")
    assert "listen 127.0.0.1:8080 default_server;" in rendered and "unix:/run/" not in rendered
    shipped = SITE_CONF.read_text()
    for directive in ("client_header_timeout", "client_body_timeout", "client_max_body_size",
                      "proxy_request_buffering on", "always"):
        assert directive in shipped
    # nginx sends the app's policy in the app's place: the two must not drift apart
    assert shipped.count(f'Content-Security-Policy "{CONTENT_SECURITY_POLICY}" always;') == 3


@pytest.mark.parametrize("slow_body", [False, True], ids=["slow-headers", "slow-bodies"])
def test_healthz_and_a_search_are_answered_while_50_slowloris_connections_are_open(site, demo_catalogue, slow_body):
    """Against gunicorn alone, 10 slow-header connections make / and /healthz time out.

    Slow bodies reach gunicorn only if nginx stops buffering request bodies;
    then the 4 threads of the test's one worker would all be held.
    """
    photo = (demo_catalogue / "42.jpg").read_bytes()
    body, headers = _multipart(photo)
    with Slowloris(site.port, count=50, interval=1.0, slow_body=slow_body) as attack:
        if slow_body:  # headers complete: the per-address limit of 4 searches at once turns the rest away
            assert _eventually(lambda: attack.answered(429) >= 46), attack.answered(429)
        else:  # headers never complete: nginx holds them until client_header_timeout, gunicorn never sees them
            assert attack.open_connections() == 50
        status, _, payload = site.request("GET", "/healthz", source=OTHER_CLIENT)
        assert status == 200 and json.loads(payload)["state"] == "ready"
        status, _, payload = site.request("POST", "/api/search", body=body, headers=headers, source=OTHER_CLIENT)
        assert status == 200, payload[:300]
        assert json.loads(payload)["queries"][0]["results"][0]["id"] == "42"
        status, _, page = site.request("GET", "/", source=OTHER_CLIENT)
        assert status == 200 and b"<form" in page
        # the attack was still on while the normal client was served
        assert attack.open_connections() == 50


def _eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _raise_open_files_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this test needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_1600_connections_from_one_address_do_not_shut_out_another(site):
    """Debian's 768 connections per nginx worker were filled by one address; the shipped main config has room."""
    _raise_open_files_limit(4096)
    with Slowloris(site.port, count=1600, interval=2.0) as attack:
        answers = [site.request("GET", "/healthz", timeout=10, source=OTHER_CLIENT)[0] for _ in range(20)]
        page = site.request("GET", "/", timeout=10, source=OTHER_CLIENT)
        assert attack.open_connections() + attack.reopened >= 1600  # still attacking while the other was served
    assert answers == [200] * 20
    assert page[0] == 200 and b"<form" in page[2]
    assert "worker_connections are not enough" not in (site.folder / "error.log").read_text()


def _concurrently(count: int, call) -> list:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_one_address_is_limited_to_a_few_searches_at_once_and_told_to_retry(site):
    body, headers = _multipart(b"x" * 1000)  # not an image: the app answers 415 quickly
    answers = _concurrently(24, lambda: site.request("POST", "/api/search", body=body, headers=headers, timeout=30))
    refused = [(status, head, payload) for status, head, payload in answers if status == 429]
    assert refused, sorted({status for status, _, _ in answers})
    status, head, payload = refused[0]
    assert head["retry-after"] == "5" and "Too many requests" in json.loads(payload)["error"]["message"]
    for name in SECURITY_HEADERS:
        assert name in head
    assert {status for status, _, _ in answers} <= {415, 429}
    # another address is not affected, and health checks are never rate-limited
    assert site.request("POST", "/api/search", body=body, headers=headers, source=OTHER_CLIENT)[0] == 415
    assert _concurrently(24, lambda: site.request("GET", "/healthz", timeout=30)[0]) == [200] * 24


def test_proxied_answers_carry_one_copy_of_each_security_header(site):
    conn = socket.create_connection(("127.0.0.1", site.port))
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = b""
    while chunk := conn.recv(65536):
        raw += chunk
    conn.close()
    head = raw.split(b"\r\n\r\n", 1)[0].decode().lower()
    for name in SECURITY_HEADERS:
        assert head.count(f"\r\n{name}:") == 1, name


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
    ids=["no-host", "long-uri", "long-header"],
)
def test_nginx_own_error_pages_carry_the_security_headers(site, raw, status):
    """gunicorn's own 400/414/431 pages had none; nginx now answers these before gunicorn sees them."""
    conn = socket.create_connection(("127.0.0.1", site.port), timeout=30)
    conn.sendall(raw)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    conn.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert head.startswith(f"http/1.1 {status}")
    for name in SECURITY_HEADERS:
        assert f"\r\n{name}:" in head, name


def test_a_body_over_the_proxy_limit_gets_413_naming_the_limit(site):
    body, headers = _multipart(b"\xff" * (12 * 1024 * 1024))
    status, response_headers, payload = site.request("POST", "/api/search", body=body, headers=headers)
    assert status == 413
    assert "10 MB limit" in json.loads(payload)["error"]["message"]
    for name in SECURITY_HEADERS:
        assert name in response_headers


def test_with_gunicorn_down_nginx_answers_503_with_retry_after(tmp_path):
    with nginx_only(tmp_path / "nginx") as proxy:
        status, headers, payload = proxy.request("GET", "/healthz")
    assert status == 503
    assert headers["retry-after"] == "5"
    assert json.loads(payload)["error"]["status"] == 503
    for name in SECURITY_HEADERS:
        assert name in headers
