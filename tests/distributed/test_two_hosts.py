"""Two hosts for real: two network namespaces joined by a veth pair (10.213.0.1 and 10.213.0.2, nothing outside
them), a 2-node torchrun job across them (c10d rendezvous on the first one's address), watched and steered from
the namespace rank 0 is not in with scorch-ctl over CURVE.

This is the off-host path that loopback tests never touch: a non-loopback bind with CURVE keys, gloo between
two addresses, the per-rank channel across hosts, a client on another address. Skipped, saying why, where
network namespaces cannot be made (not root, no `ip`, no CAP_NET_ADMIN).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers.runs import example_args, read_events, scorch_env

pytestmark = pytest.mark.slow

IP = shutil.which("ip") or "/usr/sbin/ip"
SUBNET = "10.213.0"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


class TwoHosts:
    """Namespaces A (10.213.0.1) and B (10.213.0.2), named after this process so that parallel runs do not meet."""

    def __init__(self) -> None:
        tag = str(os.getpid())[-6:]
        self.names = {"a": f"scorch-a{tag}", "b": f"scorch-b{tag}"}
        self.links = {"a": f"sca{tag}", "b": f"scb{tag}"}
        self.addresses = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2"}
        made = []
        try:
            for side in ("a", "b"):
                sh(IP, "netns", "add", self.names[side])
                made.append(side)
            sh(IP, "link", "add", self.links["a"], "type", "veth", "peer", "name", self.links["b"])
            for side in ("a", "b"):
                ns, link = self.names[side], self.links[side]
                sh(IP, "link", "set", link, "netns", ns)
                sh(IP, "-n", ns, "addr", "add", f"{self.addresses[side]}/24", "dev", link)
                sh(IP, "-n", ns, "link", "set", link, "up")
                sh(IP, "-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.names = {side: self.names[side] for side in made}
            self.remove()
            pytest.skip(f"cannot make network namespaces here ({' '.join(exc.cmd[:4])}: {exc.stderr.strip()[:200]}); "
                        "the two-host test needs root and CAP_NET_ADMIN")

    def run(self, side: str, *cmd: str, **kwargs) -> subprocess.Popen:
        env = dict(scorch_env(), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", GLOO_SOCKET_IFNAME=self.links[side])
        return subprocess.Popen([IP, "netns", "exec", self.names[side], *cmd], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, **kwargs)

    def call(self, side: str, *cmd: str) -> subprocess.CompletedProcess:
        env = dict(scorch_env(), PYTHONUNBUFFERED="1")
        return subprocess.run([IP, "netns", "exec", self.names[side], *cmd], env=env, capture_output=True, text=True,
                              timeout=120)

    def remove(self) -> None:
        """Every process left in the namespaces (by pid), then the namespaces (and with them the veth pair)."""
        for ns in self.names.values():
            pids = sh(IP, "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh(IP, "netns", "del", ns, check=False)


@pytest.fixture
def hosts():
    if os.geteuid() != 0 or not os.path.exists(IP):
        pytest.skip("the two-host test makes network namespaces: it needs root and `ip` (iproute2)")
    made = TwoHosts()
    yield made
    made.remove()


def wait_for(what: str, check, procs: list[subprocess.Popen], timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a node ended before {what}:\n" + "\n---\n".join(p.communicate()[0][-2500:] for p in procs))
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout} s")


def test_a_job_across_two_hosts_trains_and_is_steered_over_curve(hosts, tmp_path):
    # GIVEN CURVE keys and a long run of 2 nodes x 1 rank, one node in each namespace
    keys = tmp_path / "keys"
    made = subprocess.run([sys.executable, "-m", "scorch.ctl", "keygen", str(keys)], env=scorch_env(),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    run_dir = tmp_path / "run"
    train = example_args("two_inputs", run_dir, "--dataset-args", '{"size": 100000}', "--batch-size", "16",
                         "--epochs", "1", "--no-tensorboard", "--curve-keys", str(keys))
    nodes = {}
    for side in ("a", "b"):  # each node's rank 0 (if it is the job's) binds to that node's own address
        nodes[side] = hosts.run(side, sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                "--rdzv-endpoint", f"{hosts.addresses['a']}:29477", "--rdzv-id", "scorch-two-hosts",
                                # the host name resolves to 127.0.0.1 in both namespaces: say which one hosts the store
                                "--rdzv-conf", f"is_host={'true' if side == 'a' else 'false'}",
                                "--local-addr", hosts.addresses[side], "-m", "scorch.cli", *train,
                                "--bind", f"{hosts.addresses[side]}:0")
    procs = list(nodes.values())
    try:
        # WHEN it trains across them
        def steps() -> bool:
            return (run_dir / "events.jsonl").exists() and any(e["type"] == "step" for e in read_events(run_dir))

        wait_for("step events", steps, procs)
        info = json.loads((run_dir / "run.json").read_text())
        assert info["world_size"] == 2 and info["telemetry"]["curve_server_key"]
        here = next(side for side in ("a", "b") if hosts.addresses[side] in info["telemetry"]["control"])
        there = "b" if here == "a" else "a"
        # THEN both ranks report over the per-rank channel across the veth pair
        wait_for("both ranks reporting", lambda: any(e["type"] == "system" and [r["state"] for r in e["ranks"]] ==
                                                     ["live", "live"] for e in read_events(run_dir)), procs)
        # AND scorch-ctl in the other namespace reads the live state over CURVE
        status = hosts.call(there, sys.executable, "-m", "scorch.ctl", str(run_dir), "status",
                            "--curve-keys", str(keys))  # keygen's client key: the one authorized_clients/ lists
        assert status.returncode == 0, status.stderr
        live = json.loads(status.stdout)["live"]
        assert live["state"] == "running" and [r["state"] for r in live["ranks"]] == ["live", "live"]
        # AND from there it asks for a checkpoint, which both ranks apply at the same step
        done = hosts.call(there, sys.executable, "-m", "scorch.ctl", str(run_dir), "checkpoint", "--wait",
                          "--wait-timeout", "180", "--curve-keys", str(keys))
        assert done.returncode == 0, done.stderr
        saved = [e for e in read_events(run_dir) if e["type"] == "checkpoint_saved"]
        assert [e["reason"] for e in saved] == ["request"]
        # AND a stop, after which both nodes end cleanly
        assert hosts.call(there, sys.executable, "-m", "scorch.ctl", str(run_dir), "stop",
                          "--curve-keys", str(keys)).returncode == 0
        outs = {side: proc.communicate(timeout=180)[0] for side, proc in nodes.items()}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert all(proc.returncode == 0 for proc in procs), "\n---\n".join(out[-2500:] for out in outs.values())
    ended = read_events(run_dir)[-1]
    assert ended["type"] == "run_ended" and ended["status"] == "stopped"
