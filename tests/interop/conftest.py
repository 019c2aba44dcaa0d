"""Fixtures for the Synapse interoperability tests.

One Synapse (from the ``HS_SYNAPSE_VENV`` venv, default
``$HOME/.cache/hs-synapse-venv``) and one of our homeservers (``HS_BINARY``,
default ``$CARGO_TARGET_DIR/debug/homeserver``) are started for the whole
session, on loopback, federating with each other over TLS:

* a throwaway CA is made with ``openssl``; one leaf certificate for
  ``localhost`` / ``127.0.0.1`` is issued from it and served by both;
* both trust that CA for outbound federation (Synapse:
  ``federation_custom_ca_list``; ours: ``[federation] trusted_ca_paths``);
* server names are ``localhost:<federation port>``, so neither side needs
  DNS, SRV or ``.well-known``;
* Synapse's outbound IP range blocklist is relaxed for loopback.

Each test uses fresh users, so the tests do not depend on each other's rooms.
Both servers' logs are attached to the report of a failed test.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 15.0
LOG_TAIL_CHARS = 30_000


# Below Linux's ephemeral range (32768-60999 by default): the kernel never
# hands these out to other processes' outgoing connections or port-0 binds,
# so a port found free here stays free until the servers bind it.
PORT_RANGE = (20000, 32000)


def _free_port(taken: set[int]) -> int:
    for _ in range(500):
        port = random.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _binary() -> Path:
    explicit = os.environ.get("HS_BINARY")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR") or str(
        Path.home() / ".cache" / "hs-target"
    )
    return Path(target) / "debug" / "homeserver"


def _synapse_python() -> Path:
    venv = os.environ.get("HS_SYNAPSE_VENV") or str(
        Path.home() / ".cache" / "hs-synapse-venv"
    )
    return Path(venv) / "bin" / "python"


@dataclass
class Server:
    """A running homeserver process (ours or Synapse) and where to reach it."""

    kind: str
    server_name: str
    base_url: str
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


@dataclass
class Pki:
    ca_cert: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A CA made for this run and a localhost certificate it issued."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=hs interop test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf",
        cwd=d,
    )  # fmt: skip
    return Pki(ca_cert=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


@pytest.fixture(scope="session")
def ports() -> dict[str, int]:
    taken: set[int] = set()
    return {
        name: _free_port(taken) for name in ("ours_client", "ours_fed", "syn_client", "syn_fed")
    }


def _wait_until_serving(server: Server) -> None:
    url = f"{server.base_url}/_matrix/client/versions"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(
                f"{server.kind} exited with code {code} before serving:\n"
                + server.log_tail()
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
        time.sleep(0.2)
    raise RuntimeError(
        f"{server.kind} did not answer {url} within {STARTUP_TIMEOUT_S:.0f}s "
        f"(last error: {last_error}):\n" + server.log_tail()
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


def _synapse_config(d: Path, pki: Pki, ports: dict[str, int]) -> Path:
    (d / "log.yaml").write_text(
        f"""\
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {d / 'synapse.log'}
    filters: [context]
loggers:
  synapse.storage.SQL:
    level: WARNING
  twisted:
    level: WARNING
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""
    )
    # High limits: the tests register, join and send in bursts.
    rc = "{per_second: 1000, burst_count: 1000}"
    config = d / "homeserver.yaml"
    config.write_text(
        f"""\
server_name: "localhost:{ports['syn_fed']}"
pid_file: {d / 'homeserver.pid'}
public_baseurl: "http://127.0.0.1:{ports['syn_client']}/"
listeners:
  - port: {ports['syn_client']}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
  - port: {ports['syn_fed']}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [federation, keys]
        compress: false
tls_certificate_path: {pki.cert}
tls_private_key_path: {pki.key}
federation_verify_certificates: true
federation_custom_ca_list:
  - {pki.ca_cert}
ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
database:
  name: sqlite3
  args:
    database: {d / 'homeserver.db'}
log_config: {d / 'log.yaml'}
media_store_path: {d / 'media'}
signing_key_path: {d / 'signing.key'}
registration_shared_secret: "interop-test-secret"
enable_registration: true
enable_registration_without_verification: true
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: true
rc_message: {rc}
rc_registration: {rc}
rc_login:
  address: {rc}
  account: {rc}
  failed_attempts: {rc}
rc_joins:
  local: {rc}
  remote: {rc}
rc_invites:
  per_room: {rc}
  per_user: {rc}
  per_issuer: {rc}
rc_federation:
  window_size: 1000
  sleep_limit: 1000
  sleep_delay: 1
  reject_limit: 1000
  concurrent: 100
"""
    )
    return config


@pytest.fixture(scope="session")
def synapse(tmp_path_factory, pki: Pki, ports: dict[str, int], servers_log):
    python = _synapse_python()
    if not python.is_file():
        pytest.fail(
            f"Synapse venv python not found at {python}; "
            "run ./scripts/test.sh synapse, or set HS_SYNAPSE_VENV"
        )
    d = tmp_path_factory.mktemp("synapse")
    config = _synapse_config(d, pki, ports)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HS_")}
    env["SYNAPSE_USE_FROZEN_DICTS"] = "0"
    subprocess.run(
        [str(python), "-m", "synapse.app.homeserver", "-c", str(config),
         "--generate-keys"],
        cwd=d, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    log_path = d / "synapse.log"
    with open(d / "stdout.log", "wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "synapse.app.homeserver", "-c", str(config)],
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        kind="synapse",
        server_name=f"localhost:{ports['syn_fed']}",
        base_url=f"http://127.0.0.1:{ports['syn_client']}",
        log_path=log_path,
        process=process,
    )
    servers_log.append(server)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def ours(tmp_path_factory, pki: Pki, ports: dict[str, int], servers_log):
    binary = _binary()
    if not binary.is_file():
        pytest.fail(
            f"homeserver binary not found at {binary}; "
            "build it with `cargo build -p homeserver` or set HS_BINARY"
        )
    d = tmp_path_factory.mktemp("ours")
    syn = f"localhost:{ports['syn_fed']}"
    config = d / "homeserver.toml"
    config.write_text(
        f"""\
server_name = "localhost:{ports['ours_fed']}"
signing_key_path = "{d / 'signing.key'}"

[listeners]
client = "127.0.0.1:{ports['ours_client']}"
federation = "127.0.0.1:{ports['ours_fed']}"

[tls]
cert_path = "{pki.cert}"
key_path = "{pki.key}"

[database]
url = "sqlite://{d / 'hs.db'}"

[registration]
enabled = true

[rate_limits]
enabled = false

[federation]
trusted_ca_paths = ["{pki.ca_cert}"]
overrides = {{ "{syn}" = "127.0.0.1:{ports['syn_fed']}" }}
"""
    )
    log_path = d / "homeserver.log"
    # Every HS_* variable is a config override to the server: keep ours out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HS_")}
    env.setdefault("RUST_LOG", "info,ruma_state_res=warn")
    env.setdefault("RUST_BACKTRACE", "1")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)],
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        kind="ours",
        server_name=f"localhost:{ports['ours_fed']}",
        base_url=f"http://127.0.0.1:{ports['ours_client']}",
        log_path=log_path,
        process=process,
    )
    servers_log.append(server)
    try:
        _wait_until_serving(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def servers_log() -> list[Server]:
    return []


@pytest.fixture(autouse=True)
def _attach_logs(request, servers_log):
    request.node.interop_servers = servers_log
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches both servers' logs to the report of a failed test."""
    report = yield
    if report.failed:
        for server in getattr(item, "interop_servers", []):
            report.sections.append((f"{server.kind} log", server.log_tail()))
    return report
