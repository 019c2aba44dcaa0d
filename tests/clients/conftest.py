"""Fixtures for the real-client tests: a homeserver process per test.

The binary comes from ``HS_BINARY`` (default ``$CARGO_TARGET_DIR/debug/homeserver``).
Each test gets a fresh server with its own temporary SQLite database, signing key
and port, started as ``homeserver --config FILE``. The server's output goes to a
log file, which is attached to the report of any test that fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 20_000


def _binary() -> Path:
    explicit = os.environ.get("HS_BINARY")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(
        Path.home() / ".cache" / "hs-target"
    )
    return Path(target) / "debug" / "homeserver"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Homeserver:
    """A running homeserver process and where to reach it."""

    server_name: str
    base_url: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<could not read {self.log_path}: {e}>"
        if len(text) > LOG_TAIL_CHARS:
            text = "...\n" + text[-LOG_TAIL_CHARS:]
        return text


def _write_config(tmp: Path, port: int) -> Path:
    config = tmp / "homeserver.toml"
    config.write_text(
        f"""\
server_name = "localhost"
signing_key_path = "{tmp / 'signing.key'}"

[listeners]
client = "127.0.0.1:{port}"

[database]
url = "sqlite://{tmp / 'hs.db'}"

[registration]
enabled = true

[rate_limits]
enabled = false
"""
    )
    return config


def _wait_until_serving(hs: Homeserver) -> None:
    """Polls GET /_matrix/client/versions until it answers 200."""
    url = f"{hs.base_url}/_matrix/client/versions"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = hs.process.poll()
        if code is not None:
            raise RuntimeError(
                f"homeserver exited with code {code} before serving "
                "(its output is in the report below)"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last_error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last_error = str(e)
        time.sleep(0.1)
    raise RuntimeError(
        f"homeserver did not answer {url} within {STARTUP_TIMEOUT_S:.0f}s "
        f"(last error: {last_error}; its output is in the report below)"
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def homeserver(request, tmp_path: Path):
    binary = _binary()
    if not binary.is_file():
        # A failure, not a skip: a suite that silently skips proves nothing.
        pytest.fail(
            f"homeserver binary not found at {binary}; "
            "build it with `cargo build -p homeserver` or set HS_BINARY"
        )

    port = _free_port()
    config = _write_config(tmp_path, port)
    log_path = tmp_path / "homeserver.log"
    # The server reads every HS_* variable as a config override and rejects
    # unknown keys, so the test harness's own (HS_BINARY, HS_TEST_POSTGRES_URL,
    # ...) must not reach it: the config file alone describes this server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HS_")}
    env.setdefault("RUST_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    hs = Homeserver(
        server_name="localhost",
        base_url=f"http://127.0.0.1:{port}",
        config_path=config,
        log_path=log_path,
        process=process,
    )
    request.node.homeserver = hs
    try:
        _wait_until_serving(hs)
        yield hs
    finally:
        _stop(process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the homeserver's output to the report of a failed test."""
    report = yield
    hs = getattr(item, "homeserver", None)
    if hs is not None and report.failed:
        report.sections.append(("homeserver output", hs.log_tail()))
    return report
