"""The official MCP conformance runner (npm ``@modelcontextprotocol/conformance``, 0.2.0-alpha.12: the
release with the 2026-07-28 and SEP-2663 tasks scenarios) against the real ``wan-mcp serve`` over
streamable HTTP, through a loopback relay that adds the bearer token (the runner sends none).

The tasks scenarios drive fixture tools of a conformance test server (``greet``, ``slow_compute``,
``failing_job``, ``protocol_error_job``) that a product server does not have; the checks that do not
depend on them apply to us and must pass: the extension advertised, ``tasks/*`` refused (-32021) to a
client that did not declare it, sync fallthrough, ``tasks/result``/``tasks/list`` gone, ``resultType``
on every answer, unknown ids -32602, and every message valid against the spec's JSON schema. The
core 2026-07-28 scenarios listed must pass whole (stateless requests, header validation, caching
hints, listings, resource-not-found). The runner's full report is printed for the closing note.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKENS, Dirs, free_port, server_env, start_http_server
from wan_mcp.simulator.harness import SimulatorServer

HERE = Path(__file__).resolve().parents[1] / "conformance"
RUNNER = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NODE = HERE / "node_modules" / ".bin" / "node"
KEY = "sk-conformance-0123456789"

#: scenario -> the checks that apply to this server (None: every check of the scenario).
APPLICABLE: dict[str, set[str] | None] = {
    "tasks-capability-negotiation": {
        "tasks-extension-advertised",
        "sep-2663-tasks-methods-non-declaring",
        "sep-2663-server-rejects-undeclared-client",
        "wire-schema-valid",
    },
    "tasks-dispatch-and-envelope": {
        "sep-2663-tasks-result-removed-method-not-found",
        "tasks-removed-tasks-list",
        "sep-2663-legacy-task-param-ignored",
        "tasks-immediate-result-shortcut",
        "tasks-result-type-complete-on-non-task-responses",
        "sep-2663-tasks-get-invalid-task-id-32602",
        "wire-schema-valid",
    },
    "tasks-lifecycle": {"tasks-sync-tool-call", "wire-schema-valid"},
    # All but two checks that drive a fixture tool needing a capability the runner leaves undeclared.
    "server-stateless": {
        "sep-2575-request-meta-invalid-missing-meta",
        "sep-2575-http-server-meta-invalid-400",
        "sep-2575-request-meta-invalid-missing-protocol-version",
        "sep-2575-request-meta-invalid-missing-client-capabilities",
        "sep-2575-request-meta-client-info-optional",
        "sep-2575-server-implements-discover",
        "sep-2575-server-identifies-in-result-meta",
        "sep-2575-server-declares-prompts-in-discover",
        "sep-2575-discover-capabilities-match-handlers",
        "sep-2575-server-unsupported-version-error",
        "sep-2575-http-server-unsupported-version-400",
        "sep-2575-http-server-header-mismatch-400",
        "sep-2575-http-server-method-not-found-404-initialize",
        "sep-2575-http-server-method-not-found-404-ping",
        "sep-2575-http-server-method-not-found-404",
        "sep-2575-http-server-no-independent-requests-on-stream",
        "sep-2575-server-no-log-without-loglevel",
        "sep-2575-server-sends-subscription-ack",
        "sep-2575-server-tags-subscription-id",
        "sep-2575-server-honors-notification-filter",
        "sep-2575-http-server-error-jsonrpc-id",
    },
    "http-header-validation": None,
    "caching": None,
    "tools-list": None,
    "resources-list": None,
    "prompts-list": None,
    "sep-2164-resource-not-found": None,
}
CHECK = re.compile(r"\[([\w.-]+)\s*\]\s+(SUCCESS|FAILURE|WARNING)")


@pytest.mark.timeout(300)
def test_the_official_conformance_runner_passes_every_check_that_applies(tmp_path: Path, e2e_logs: Path) -> None:
    if not RUNNER.is_file() or not NODE.is_file():
        pytest.skip("conformance runner not installed: run `npm ci` in tests/conformance (.ci/run does)")
    dirs = Dirs(tmp_path, tmp_path / "inputs", tmp_path / "data", tmp_path / "videos")
    dirs.inputs.mkdir()
    report: list[str] = []
    failed: dict[str, list[str]] = defaultdict(list)
    with SimulatorServer(job_seconds=1.0, api_keys={KEY}) as sim:
        env = server_env(sim, dirs, WAN_MCP_API_KEY=KEY, WAN_MCP_HTTP_TOKEN=TOKENS[0], WAN_MCP_LOG_LEVEL="WARNING")
        server = start_http_server(env, "http", e2e_logs)
        port = free_port()
        proxy = subprocess.Popen(
            [sys.executable, str(HERE / "bearer_proxy.py"), server.base, TOKENS[0], str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port)
            for scenario, wanted in APPLICABLE.items():
                run = subprocess.run(
                    [str(NODE), str(RUNNER), "server", "--url", f"http://127.0.0.1:{port}/mcp", "--scenario", scenario],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    cwd=HERE,
                )
                plain = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
                results = CHECK.findall(plain)
                assert results, f"{scenario}: the runner reported no check:\n{plain[-2000:]}"
                for check, outcome in results:
                    report.append(f"{scenario}: {check} {outcome}")
                    applies = wanted is None or check in wanted
                    if applies and outcome == "FAILURE":
                        failed[scenario].append(check)
                missing = (wanted or set()) - {c for c, _ in results}
                assert not missing, f"{scenario}: the runner no longer reports {sorted(missing)}"
        finally:
            proxy.terminate()
            proxy.wait(10)
            server.stop()
    print("\nconformance report:\n" + "\n".join(report))
    assert not failed, dict(failed)


def _wait_port(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the relay on port {port} did not start")
