"""Engine stream handling: docker-py never raises for errors inside a stream, so every chunk is checked."""

import http.server
import io
import threading

import docker
import pytest

from core.errors import BuildCancelled, DaemonUnavailable, PushFailed, RetryableError
from core.registry.client import error_for_message
from worker.engine import Engine, _lines_of

PUSH_STREAM = [
    {"status": "The push refers to repository [127.0.0.1:5001/team/x]"},
    {"status": "Preparing", "progressDetail": {}, "id": "015e76b236c7"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 1024}, "id": "015e76b236c7"},
    {"status": "Pushed", "progressDetail": {}, "id": "015e76b236c7"},
]


def checked(stream, check=lambda: None):
    lines = []
    engine = Engine(api=None, on_line=lines.append, check=check)
    chunks = list(engine._checked(iter(stream), lambda m: error_for_message(m, "r:1", "push of x")))
    return chunks, lines


def test_progress_bar_updates_are_not_logged_but_status_lines_are():
    chunks, lines = checked(PUSH_STREAM)
    assert len(chunks) == 4
    assert lines == ["The push refers to repository [127.0.0.1:5001/team/x]", "015e76b236c7: Preparing",
                     "015e76b236c7: Pushed"]


@pytest.mark.parametrize("chunk", [{"error": "blob upload invalid"},
                                   {"errorDetail": {"message": "blob upload invalid"}}])
def test_an_error_inside_the_stream_raises_the_mapped_domain_error(chunk):
    with pytest.raises(PushFailed, match="blob upload invalid"):
        checked([*PUSH_STREAM, chunk])


def test_the_check_can_stop_a_stream_between_chunks():
    def cancelled():
        raise BuildCancelled("cancelled on request")

    with pytest.raises(BuildCancelled):
        checked(PUSH_STREAM, check=cancelled)


def test_build_lines_are_split_and_steps_followed():
    engine = Engine(api=None, on_line=lambda line: None, on_container=(seen := []).append)
    for text in ["Step 4/6 : RUN apt-get update\n ---> Running in 0327236d4653\n", "Get:1 http://deb\n",
                 " ---> 5dd34b0fe221\n"]:
        engine._follow_steps({"stream": text})
    assert seen == ["0327236d4653"] and engine.step_images == ["5dd34b0fe221"]
    assert _lines_of({"stream": "a\n\nb\n"}) == ["a", "b"]


class CutStreamEngine(http.server.BaseHTTPRequestHandler):
    """An engine that starts a chunked build stream and drops the connection mid-chunk, as a stopping dockerd does."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first = b'{"stream":"Step 1/2 : FROM scratch\\n"}\r\n'
        self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
        self.wfile.write(b"40\r\n{\"stream\":")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_stream_engine():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutStreamEngine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = docker.APIClient(base_url=f"tcp://127.0.0.1:{server.server_port}", version="1.41", timeout=5)
    yield api
    api.close()
    server.shutdown()


def test_an_engine_connection_cut_mid_stream_is_a_retryable_daemon_error(cut_stream_engine):
    # Given an engine whose build stream breaks off in the middle of a chunk
    lines = []
    engine = Engine(cut_stream_engine, on_line=lines.append)
    # When a build reads that stream
    with pytest.raises(DaemonUnavailable) as raised:
        engine.build(io.BytesIO(b""), "x:1", nocache=False, timeout_s=5)
    # Then it fails as an engine outage, which is retried, not as an internal error, and the line before was logged
    assert isinstance(raised.value, RetryableError) and "stopped answering" in str(raised.value)
    assert lines == ["Step 1/2 : FROM scratch"]
