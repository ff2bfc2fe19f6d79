"""nginx and the app agree on their limits, so that an oversized request always gets the right status and the
site's own short answer: never a 503, never gunicorn's bare 414 or 431 page.

Bodies over the app's limits used to reach the app, which answered 413
before reading them and closed the connection: nginx, still sending the
body, reported a failed upstream and the shopper sometimes got 503
"restarting". A request line or header between gunicorn's limits and
nginx's larger buffers got gunicorn's own HTML page. The first tests
check that the shipped config keeps nginx's limits at or below the app's
and gunicorn's; the slow ones send the requests through real nginx and
gunicorn, 200 times where the failure was intermittent.
"""

from __future__ import annotations

import json
import re
import socket
import uuid

import pytest

from indexer.config import FIELDS
from tests.support.gunicorn import REPO
from tests.support.proxy import SITE_CONF, deployment, fresh_client, nginx_binary
from web.queries import SMALL_BODY_BYTES

SECURITY_HEADERS = ("x-content-type-options", "content-security-policy", "referrer-policy", "x-frame-options")
# what gunicorn's own error pages look like (gunicorn/util.py write_error): "<h1><p>URI Too Long</p></h1>"
GUNICORN_PAGE = re.compile(rb"<h1><p>|Request Line is too large|Error parsing headers")
GUNICORN_CONF = (REPO / "gunicorn.conf.py").read_text()


def _directive(name: str) -> list[str]:
    """The arguments of the one ``name`` directive in the shipped site config."""
    [args] = re.findall(rf"^\s*{name}\s+([^;]+);", SITE_CONF.read_text(), flags=re.MULTILINE)
    return args.split()


def _gunicorn_setting(name: str) -> int:
    [value] = re.findall(rf"^{name} = (\d+)$", GUNICORN_CONF, flags=re.MULTILINE)
    return int(value)


def _small_body_patterns() -> tuple[re.Pattern, re.Pattern]:
    """The map's two regexes: multipart (never refused here) and the Content-Length over the small-body limit."""
    block = re.search(r"map \"\$content_type\|\$content_length\" \$fashion_small_body_too_large \{(.*?)\}\n",
                      SITE_CONF.read_text(), flags=re.DOTALL).group(1)
    multipart, too_long = re.findall(r'^\s*"~(\*?)(.*?)"\s+[01];', block, flags=re.MULTILINE)
    return re.compile(multipart[1], re.IGNORECASE if multipart[0] else 0), re.compile(too_long[1])


def test_nginx_refuses_uploads_exactly_over_the_apps_limit():
    assert _directive("client_max_body_size") == [f"{FIELDS['max_upload_mb'].default}m"]  # both count MiB


@pytest.mark.parametrize("length", [0, 1, 9999, 60000, 65535, 65536, 65537, 65539, 65540, 65599, 65600, 65999, 66000,
                                    69999, 70000, 99999, 100000, 999999, 10**7, 10**12])
def test_nginx_refuses_other_bodies_exactly_over_the_apps_64_kb(length):
    multipart, too_long = _small_body_patterns()
    form = f"application/x-www-form-urlencoded|{length}"
    assert bool(too_long.search(form)) == (length > SMALL_BODY_BYTES)
    assert bool(too_long.search(f"|{length:010d}")) == (length > SMALL_BODY_BYTES)  # leading zeros
    for upload in ("multipart/form-data; boundary=x", "Multipart/Form-Data;boundary=x", "multipart/form-data"):
        assert multipart.search(f"{upload}|{length}")
    assert not multipart.search(f"multipart/form-data-not|{length}")


def test_nginx_header_limits_are_below_gunicorns():
    count, size = _directive("large_client_header_buffers")
    line_limit = _gunicorn_setting("limit_request_line")
    # the longest request line nginx takes is its buffer less CRLF; an HTTP/0.9 line gains " HTTP/1.0" on the way
    assert int(size) - 2 + len(" HTTP/1.0") <= line_limit
    assert int(size) < 8190  # gunicorn's limit_request_field_size (its default)
    # gunicorn sees only the headers nginx sets: its own three (Connection, Content-Length, Transfer-Encoding)
    # and the site config's list, far below limit_request_fields
    assert _directive("proxy_pass_request_headers") == ["off"]
    forwarded = re.findall(r"^\s*proxy_set_header\s", SITE_CONF.read_text(), flags=re.MULTILINE)
    assert len(forwarded) + 3 < _gunicorn_setting("limit_request_fields")


# ---------------------------------------------------------------- through real nginx and gunicorn

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed: run scripts/install.sh")


@pytest.fixture(scope="module")
def site(built_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    extra = {"FASHION_RESCAN_SECONDS": "0"}
    with deployment(folder, built_index.catalogue, built_index.index_dir, workers=1, extra_env=extra) as running:
        yield running


def _upload(size: int) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _is_the_sites_answer(path: str, status: int, headers: dict, payload: bytes) -> bool:
    """JSON with the status under /api/ and from /healthz, the site's error page elsewhere; the security headers
    on both."""
    if any(name not in headers for name in SECURITY_HEADERS) or GUNICORN_PAGE.search(payload):
        return False
    if path.startswith("/api/") or path == "/healthz":
        is_json = headers["content-type"].startswith("application/json")
        return is_json and json.loads(payload)["error"]["status"] == status
    return headers["content-type"].startswith("text/html") and b'class="error-page"' in payload


def _send_200_times(site, body: bytes, headers: dict) -> tuple[dict, list]:
    """200 POSTs, alternately to /search and /api/search, each from a new address: status counts, odd answers."""
    statuses, odd = {}, []
    for index in range(200):
        path = ("/search", "/api/search")[index % 2]
        status, head, payload = site.request("POST", path, body=body, headers=headers, source=fresh_client())
        statuses[status] = statuses.get(status, 0) + 1
        if not _is_the_sites_answer(path, status, head, payload):
            odd.append((path, status, head.get("content-type"), payload[:200]))
    return statuses, odd


@pytest.mark.slow
@needs_nginx
def test_200_uploads_over_the_limit_all_get_the_sites_413(site):
    body, headers = _upload(10 * 1024 * 1024 + 1024)
    statuses, odd = _send_200_times(site, body, headers)
    assert statuses == {413: 200} and not odd, (statuses, odd[:3])
    status, _, payload = site.request("POST", "/api/search", body=body, headers=headers, source=fresh_client())
    assert "10 MB limit" in json.loads(payload)["error"]["message"]


@pytest.mark.slow
@needs_nginx
def test_200_forms_over_64_kb_all_get_the_sites_413(site):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    statuses, odd = _send_200_times(site, b"k=&" * 350_000, headers)  # 1 MB
    assert statuses == {413: 200} and not odd, (statuses, odd[:3])
    status, _, page = site.request("POST", "/search", body=b"k=&" * 21846, headers=headers, source=fresh_client())
    assert status == 413 and b"at most 64 KB" in page  # 65,538 bytes: just over


@pytest.mark.slow
@needs_nginx
def test_a_body_the_app_refuses_itself_still_gets_its_413_every_time(built_index, tmp_path):
    """With FASHION_MAX_UPLOAD_MB below nginx's 10 MB, the app refuses 9 MB uploads before reading them. It now
    reads the rest of the body before the connection closes; before, nginx saw the upstream fail (503)."""
    extra = {"FASHION_RESCAN_SECONDS": "0", "FASHION_MAX_UPLOAD_MB": "5"}
    with deployment(tmp_path / "site", built_index.catalogue, built_index.index_dir, workers=1,
                    extra_env=extra) as lower:
        body, headers = _upload(9 * 1024 * 1024)
        statuses, odd = _send_200_times(lower, body, headers)
        log = (lower.folder / "error.log").read_text()
    assert statuses == {413: 200} and not odd, (statuses, odd[:3])
    assert "upstream" not in log, log[-2000:]


def _raw(site, data: bytes) -> tuple[str, dict, bytes]:
    """Send ``data`` as it is and read the whole answer: status line, headers (lower-case) and body."""
    with socket.create_connection(("127.0.0.1", site.port), timeout=30, source_address=(fresh_client(), 0)) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/"):  # an HTTP/0.9 answer is the body alone
        return "", {}, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return status_line, headers, body


LONG = 5000  # between nginx's limits and gunicorn's (4094 bytes of request line, 8190 of header line)


@pytest.mark.slow
@needs_nginx
@pytest.mark.parametrize(
    ("path", "raw", "status"),
    [
        ("/", b"GET /?q=" + b"a" * LONG + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("/api/status", b"GET /api/status?q=" + b"a" * LONG + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("/healthz", b"GET /healthz?q=" + b"a" * LONG + b"\r\n", 414),  # HTTP/0.9
        ("/", b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * LONG + b"\r\n\r\n", 431),
        ("/api/search", b"GET /api/search HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * LONG + b"\r\n\r\n", 431),
        ("/browse", b"GET /browse HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 2000 + b"\r\n", 431),
    ],
    ids=["line-page", "line-api", "line-http0.9-health", "header-page", "header-api", "headers-22kb"],
)
def test_a_long_request_line_or_header_gets_nginxs_own_short_answer(site, path, raw, status):
    status_line, headers, body = _raw(site, raw)
    assert status_line.startswith(f"HTTP/1.1 {status}"), (status_line, body[:300])
    assert _is_the_sites_answer(path, status, headers, body), (headers, body[:300])


@pytest.mark.slow
@needs_nginx
def test_whatever_nginx_lets_through_gunicorn_accepts(site):
    """The longest request line and header line nginx takes, an HTTP/0.9 line of that length and 150 header
    fields (gunicorn refuses more than 100) are all answered by the app."""
    line = 3998  # nginx's buffer (4000) less CRLF
    padding = b"a" * (line - len(b"GET /api/status?q= HTTP/1.1"))
    assert _raw(site, b"GET /api/status?q=" + padding + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] \
        == "HTTP/1.1 200 OK"
    padding = b"a" * (line - len(b"GET /api/status?q="))
    assert json.loads(_raw(site, b"GET /api/status?q=" + padding + b"\r\n")[2])["state"] == "ready"
    referer = b"Referer: " + b"r" * (line - len(b"Referer: "))
    assert _raw(site, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + referer + b"\r\n\r\n")[0] \
        == "HTTP/1.1 200 OK"
    many = b"".join(b"X-Field-%d: %d\r\n" % (number, number) for number in range(150))
    status_line, _, page = _raw(site, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + many + b"\r\n")
    assert status_line == "HTTP/1.1 200 OK" and b"<form" in page
