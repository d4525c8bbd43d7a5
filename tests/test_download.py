"""mrcnn_kp.download: verified, atomic downloads from file:// URLs and a local HTTP server
(127.0.0.1) that serves, truncates or refuses files. No outside network is used."""
import hashlib
import http.server
import os
import socket
import threading

import pytest

from mrcnn_kp.download import (DownloadError, HashMismatchError, _umask, cache_root,
                               check_sha256, download, sha256_of)

PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes: several 1 MiB-less chunks, a real length
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def served(tmp_path):
    """A file and its file:// URL."""
    path = tmp_path / "mirror" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path, path.as_uri()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/full: the payload; /half: announces it all, sends half, closes; /missing: 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/missing":
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path == "/half":
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_file_url_is_downloaded_hashed_and_renamed_into_place(tmp_path, served, capsys):
    _, url = served
    dest = tmp_path / "cache" / "downloads" / "weights.bin"
    path, digest = download(url, dest, sha256=PAYLOAD_SHA256)
    assert path == dest and digest == PAYLOAD_SHA256
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["weights.bin"]  # no .part file left behind
    assert sha256_of(dest) == PAYLOAD_SHA256
    assert dest.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's private 0600
    err = capsys.readouterr().err
    assert "downloading weights.bin: 0.3 / 0.3 MB (100 %)" in err


def test_http_download_and_a_hash_prefix(tmp_path, server):
    dest = tmp_path / "w.bin"
    _, digest = download(server + "/full", dest, sha256=PAYLOAD_SHA256[:8].upper(),
                         progress=False)
    assert digest == PAYLOAD_SHA256 and dest.read_bytes() == PAYLOAD
    assert check_sha256(digest, PAYLOAD_SHA256[:8]) and not check_sha256(digest, "0" * 8)
    assert not check_sha256(digest, PAYLOAD_SHA256[:7])  # too short a prefix checks nothing


def test_wrong_hash_is_refused_and_nothing_is_kept(tmp_path, served):
    _, url = served
    dest = tmp_path / "cache" / "weights.bin"
    wrong = "0" * 64
    with pytest.raises(HashMismatchError) as caught:
        download(url, dest, sha256=wrong, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert f"has sha256 {PAYLOAD_SHA256}, expected {wrong}" in message
    assert "weights.bin" in message and url in message
    assert leftovers(dest.parent) == []


def test_connection_dropped_half_way_keeps_no_partial_file(tmp_path, server):
    dest = tmp_path / "cache" / "weights.bin"
    with pytest.raises(DownloadError) as caught:
        download(server + "/half", dest, sha256=PAYLOAD_SHA256, progress=False)
    message = str(caught.value)
    assert "\n" not in message and f"{server}/half" in message
    assert "stopped after 0.2 MB of 0.3 MB" in message or "received 0.2 MB of 0.3 MB" in message
    assert leftovers(dest.parent) == []


def test_an_exception_mid_stream_keeps_no_partial_file(tmp_path, served, monkeypatch):
    _, url = served
    dest = tmp_path / "cache" / "weights.bin"
    import mrcnn_kp.download as download_module

    class Interrupt(KeyboardInterrupt):
        pass

    def stop(self, received):  # Ctrl-C after the first chunk
        raise Interrupt

    monkeypatch.setattr(download_module._Progress, "update", stop)
    with pytest.raises(Interrupt):
        download(url, dest, sha256=PAYLOAD_SHA256)
    assert leftovers(dest.parent) == []


def test_unreachable_and_missing_files_give_one_line_errors(tmp_path, server):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "cache" / "weights.bin"
    url = f"http://127.0.0.1:{port}/weights.bin"
    with pytest.raises(DownloadError) as caught:
        download(url, dest, progress=False, timeout=5)
    message = str(caught.value)
    assert message.startswith(f"cannot download weights.bin from {url}: ")
    assert "refused" in message.lower() and "\n" not in message
    with pytest.raises(DownloadError, match=r"HTTP 404 Not Found"):
        download(server + "/missing", dest, progress=False)
    with pytest.raises(DownloadError, match="cannot download weights.bin from file:"):
        download((tmp_path / "nowhere.bin").as_uri(), dest, progress=False)
    assert leftovers(dest.parent) == []


def test_bad_expected_hash_and_the_cache_root(tmp_path, served, monkeypatch):
    with pytest.raises(DownloadError, match="not 8 to 64 hex digits"):
        download(served[1], tmp_path / "w.bin", sha256="xyz")
    monkeypatch.setenv("MRCNN_KP_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("MRCNN_KP_CACHE")
    assert cache_root() == type(cache_root())(os.path.expanduser("~")) / ".cache" / "mrcnn_kp"
