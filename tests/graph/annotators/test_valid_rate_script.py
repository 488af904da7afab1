"""The valid-answer-rate benchmark's plumbing, with a stand-in for llama-server (a Python script that takes
the same arguments and answers like a small model: prose unless a JSON schema constrains it)."""

from __future__ import annotations

import json
import sys
import textwrap

FAKE_SERVER = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port = int(sys.argv[sys.argv.index("--port") + 1])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, payload):
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"status": "ok"})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fmt = req.get("response_format")
            if fmt:
                name = fmt["json_schema"]["schema"]["properties"]["Category"]["enum"][1]
                content = json.dumps({"Category": name})
            else:
                content = "This paper is interesting and well written."
            self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


def test_valid_rate_benchmark_plumbing(load_benchmark_script, tmp_path):
    server = tmp_path / "llama-server"
    server.write_text(f"#!{sys.executable}\n" + FAKE_SERVER)
    server.chmod(0o755)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "rate.json"
    bench = load_benchmark_script("annotator_valid_rate")
    bench.main(["--server-bin", str(server), "--gguf", str(gguf), "--nodes", "6", "--out", str(out)])
    modes = json.loads(out.read_text())["modes"]
    assert modes["structured_auto"]["valid_rate"] == 1.0
    assert modes["structured_off"]["valid_rate"] == 0.0
