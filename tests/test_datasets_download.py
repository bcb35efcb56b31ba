"""Downloads against a local HTTP server (never the real network): resume, verify, errors, CLI."""

from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from w2sclip.data import download as dl
from w2sclip.data import get_dataset
from w2sclip.data.download import DownloadError, download_dataset, fetch
from w2sclip.data.miniature import make_miniature

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path in srv.status:
            self.send_error(srv.status[self.path])
            return
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, code = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            code = 206
        body = data[start:]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut.pop(self.path, None)
        self.wfile.write(body[:cut] if cut is not None else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.status, srv.cut, srv.ranges = {}, [], {}, {}, True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def test_fetch_verifies_records_and_skips_finished(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = fetch(server.url + "/f.bin", tmp_path / "f.bin", sha512_prefix=_sha(PAYLOAD)[:20])
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    assert (tmp_path / "f.bin.sha512").read_text().strip() == _sha(PAYLOAD)
    fetch(server.url + "/f.bin", dest)
    assert len(server.requests) == 1  # finished files are not fetched again


def test_fetch_resumes_a_partial_download_with_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:30_000])
    fetch(server.url + "/f.bin", tmp_path / "f.bin", sha512_prefix=_sha(PAYLOAD)[:20])
    assert server.requests == [("/f.bin", "bytes=30000-")]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_retries_a_dropped_connection_and_resumes(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut["/f.bin"] = 40_000  # the first response stops after 40,000 bytes
    fetch(server.url + "/f.bin", tmp_path / "f.bin", retries=2, wait=0, timeout=5)
    assert [r for _, r in server.requests] == [None, "bytes=40000-"]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_restarts_when_the_server_ignores_range(server, tmp_path):
    server.files["/f.bin"], server.ranges = PAYLOAD, False
    (tmp_path / "f.bin.part").write_bytes(b"x" * 500)
    fetch(server.url + "/f.bin", tmp_path / "f.bin", sha512_prefix=_sha(PAYLOAD)[:20])
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_checksum_mismatch(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    with pytest.raises(DownloadError, match="checksum mismatch.*--no-verify"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", sha512_prefix="0" * 20)
    assert not (tmp_path / "f.bin").exists() and (tmp_path / "f.bin.part.corrupt").exists()
    fetch(server.url + "/f.bin", tmp_path / "f.bin", sha512_prefix="0" * 20, verify=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_errors_say_which_url_and_what_to_do(server, tmp_path):
    server.status["/forbidden"] = 403
    with pytest.raises(DownloadError, match=r"/missing: the server refused \(HTTP 404.*by hand to"):
        fetch(server.url + "/missing", tmp_path / "a", wait=0)
    with pytest.raises(DownloadError, match="HTTP 403"):
        fetch(server.url + "/forbidden", tmp_path / "b", wait=0)
    with socket.socket() as s:  # a port nobody listens on: like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download.*offline"):
        fetch(f"http://127.0.0.1:{port}/x", tmp_path / "c", retries=1, wait=0, timeout=2)


def _serve_domainnet(server, tmp_path) -> None:
    """Serve a miniature clipart domain the way the official server lays it out."""
    mini = make_miniature("domainnet", tmp_path / "mini", domains=("clipart",), images_per_class=1)
    zpath = tmp_path / "clipart.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted((mini / "clipart").rglob("*.jpg")):
            z.write(f, f.relative_to(mini).as_posix())
    server.files["/groundtruth/clipart.zip"] = zpath.read_bytes()
    for s in ("train", "test"):
        server.files[f"/domainnet/txt/clipart_{s}.txt"] = (mini / "splits" / f"clipart_{s}.txt").read_bytes()


def test_download_domainnet_from_a_mirror(server, tmp_path, monkeypatch):
    _serve_domainnet(server, tmp_path)
    monkeypatch.setattr(dl, "DOMAINNET_SHA512", {k.rsplit("/", 1)[-1]: _sha(v)[:30]
                                                 for k, v in server.files.items()})
    root = tmp_path / "domainnet"
    files = download_dataset("domainnet", root, ["clipart"], mirror=server.url, progress=False)
    assert len(files) == 3 and (root / "downloads" / "clipart.zip.unpacked").exists()
    ds = get_dataset("domainnet", root=root, domain="clipart", split="train", verify_files=True)
    assert len(ds) == 345
    n = len(server.requests)
    download_dataset("domainnet", root, ["clipart"], mirror=server.url, progress=False)
    assert len(server.requests) == n  # idempotent: nothing fetched again
    with pytest.raises(DownloadError, match=r"(?s)3 of the domainnet files failed.*real_train\.txt"):
        download_dataset("domainnet", root, ["real"], mirror=server.url, progress=False, wait=0)


def test_manual_datasets_and_unknown_domains():
    with pytest.raises(ValueError, match="hemanthdv.org"):
        download_dataset("office_home", "/tmp/nowhere")
    with pytest.raises(KeyError, match="valid: clipart"):
        download_dataset("domainnet", "/tmp/nowhere", ["photo"])
    urls = [r.url for r in dl.domainnet_remotes(["painting"])]
    assert urls == ["http://csr.bu.edu/ftp/visda/2019/multi-source/domainnet/txt/painting_train.txt",
                    "http://csr.bu.edu/ftp/visda/2019/multi-source/domainnet/txt/painting_test.txt",
                    "http://csr.bu.edu/ftp/visda/2019/multi-source/groundtruth/painting.zip"]


def test_cli_download_check_and_list(server, tmp_path, monkeypatch):
    from w2sclip.cli import app

    _serve_domainnet(server, tmp_path)
    monkeypatch.setattr(dl, "DOMAINNET_SHA512", {})
    runner, root = CliRunner(), tmp_path / "dn"
    res = runner.invoke(app, ["data", "download", "domainnet", "--root", str(root), "--domains",
                              "clipart", "--mirror", server.url, "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "check", "domainnet", "--root", str(root), "--summary"])
    assert res.exit_code == 0 and "OK: no problems found" in res.output
    assert "domain 'sketch' not found" in res.output
    (root / "clipart" / "zigzag" / "clipart_345_000001.jpg").write_text("not a jpeg")
    res = runner.invoke(app, ["data", "check", "domainnet", "--root", str(root), "--domains", "clipart"])
    assert res.exit_code == 1 and "1 bad image(s)" in res.output and "zigzag" in res.output
    res = runner.invoke(app, ["data", "download", "domainnet", "--root", str(root), "--domains",
                              "real", "--mirror", server.url, "--quiet"])
    assert res.exit_code == 1 and "HTTP 404" in res.output
    res = runner.invoke(app, ["list", "datasets"])
    assert res.exit_code == 0 and "domainnet" in res.output and "office_home" in res.output
    res = runner.invoke(app, ["data", "make-miniature", "pacs", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0 and "test fixture" in res.output
    assert Path(tmp_path / "p" / "MINIATURE.txt").exists()
