"""``structlab lab`` (``make lab``): JupyterLab on the chapters, for root (``--allow-root``) and for
other users, on this machine's address only. The server is started for real on a free port, must
answer ``/api/status`` with the chapters as its root, and is shut down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from structlab import cli
from structlab.pipeline.chapters import project_root


@pytest.mark.parametrize("uid, allowed", [(0, True), (1000, False)])
def test_the_command_allows_root_only_for_root(monkeypatch, uid, allowed):
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    command = cli.lab_command(8899, browser=False)
    assert ("--allow-root" in command) is allowed
    assert "--ip=127.0.0.1" in command and "--port=8899" in command
    assert f"--ServerApp.root_dir={project_root() / 'chapters'}" in command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_starts_and_answers(tmp_path):
    port, token = _free_port(), "structlab-test-token"
    env = {**os.environ, "PYTHONPATH": str(project_root()),
           **{f"JUPYTER_{d}_DIR": str(tmp_path / d.lower()) for d in ("CONFIG", "DATA",
                                                                       "RUNTIME")}}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "structlab", "lab", "--port", str(port), "--no-browser", "--",
         f"--IdentityProvider.token={token}"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, status = time.monotonic() + 120, None
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                         headers={"Authorization": f"token {token}"})
        while status is None:
            assert server.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no answer within 2 minutes"
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status = json.loads(answer.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert "started" in status
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/contents",
                headers={"Authorization": f"token {token}"}), timeout=10) as answer:
            names = {item["name"] for item in json.loads(answer.read())["content"]}
        assert "neurogenesis.ipynb" in names  # the server's root is chapters/
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
