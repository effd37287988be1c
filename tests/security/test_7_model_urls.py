"""Item 7: model URLs may only be https, presigned S3, or file:// inside the configured models
directory; nothing else is opened. The size limit applies while streaming."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
import tracemalloc
import pytest

from gridsight.wire import ModelAnnouncement
from edge_agent.model_update import ModelUpdater


def _announce(url: str, sig_url: str, version: str = "v3", sha: str = "0" * 64) -> ModelAnnouncement:
    return ModelAnnouncement("gridsight-iforest", version, url, sha, sig_url, time.time())


@pytest.mark.slow
def test_a_file_url_outside_the_models_directory_is_never_opened(tmp_path, signed_models):
    folder, _, public_key = signed_models
    secret = tmp_path / "shadow"
    os.mkfifo(secret)             # opening a FIFO for reading is visible to its writer
    opened = threading.Event()

    def writer() -> None:
        with open(secret, "wb") as fh:        # blocks until someone opens the FIFO for reading
            opened.set()
            fh.write(b"root:$6$secret-hash:19000:0:99999:7:::\n")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    updater = ModelUpdater(tmp_path / "models", public_key, source_dir=folder)
    ok, reason = updater.handle_announcement(_announce(secret.as_uri(), secret.as_uri()))
    try:
        assert not ok and "not allowed" in reason, reason
        assert not opened.is_set(), "the agent opened a file outside its models directory"
    finally:
        os.close(os.open(secret, os.O_RDONLY | os.O_NONBLOCK))      # release the writer
        thread.join(5)
    for url in ("file:///etc/passwd", (folder / ".." / "shadow").as_uri(), "http://169.254.169.254/latest/meta-data",
                "ftp://example.org/model.onnx", "/etc/passwd"):
        ok, reason = updater.handle_announcement(_announce(url, url))
        assert not ok and "not allowed" in reason, (url, reason)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests = 0
    sent = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    SIZE = 64 * 1024 * 1024

    def do_GET(self) -> None:
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(self.SIZE))
        self.end_headers()
        chunk = b"\0" * 65536
        try:
            for _ in range(self.SIZE // len(chunk)):
                self.wfile.write(chunk)
                self.server.sent += len(chunk)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


def test_a_plain_http_url_is_refused_and_an_oversized_presigned_download_is_cut_off_while_streaming(
        tmp_path, signed_models):
    folder, _, public_key = signed_models
    server = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        limit = 8 * 1024 * 1024
        updater = ModelUpdater(tmp_path / "models", public_key, source_dir=folder, max_model_bytes=limit)
        ok, reason = updater.handle_announcement(_announce(f"{base}/model.onnx", f"{base}/model.onnx.sig"))
        assert not ok and "not allowed" in reason, reason
        assert server.requests == 0

        presigned = (f"{base}/models/m/v3/model.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k"
                     f"&X-Amz-Date=20261205T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=ab12")
        tracemalloc.start()
        try:
            ok, reason = updater.handle_announcement(_announce(presigned, presigned))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert not ok and "larger than" in reason, reason
        assert server.requests == 1
        assert peak < limit // 2, f"{peak} bytes held for a download refused by its size"
    finally:
        server.shutdown()
        server.server_close()


def test_a_file_url_inside_the_models_directory_is_accepted(tmp_path, signed_models):
    folder, _, public_key = signed_models
    model = folder / "model-v2.onnx"
    updater = ModelUpdater(tmp_path / "models", public_key, source_dir=folder)
    cmd = ModelAnnouncement("gridsight-iforest", "v2", model.as_uri(), hashlib.sha256(model.read_bytes()).hexdigest(),
                            (folder / "model-v2.onnx.sig").as_uri(), time.time())
    ok, reason = updater.handle_announcement(cmd)
    assert ok, reason


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.server.requests += 1
        if "X-Amz-Signature" in self.path:
            self.send_response(302)
            self.send_header("Location", self.target)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"secret")

    def log_message(self, *args) -> None:
        pass


def test_a_presigned_url_cannot_redirect_the_agent_to_a_plain_http_address(tmp_path, signed_models):
    folder, _, public_key = signed_models
    server = _Server(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Redirect.target = f"{base}/latest/meta-data/iam"
    try:
        presigned = f"{base}/m.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=k&X-Amz-Signature=ab"
        updater = ModelUpdater(tmp_path / "models", public_key, source_dir=folder)
        ok, reason = updater.handle_announcement(_announce(presigned, presigned))
        assert not ok and "redirect" in reason, reason
        assert server.requests == 1, "the agent followed the redirect to an internal address"
    finally:
        server.shutdown()
        server.server_close()
