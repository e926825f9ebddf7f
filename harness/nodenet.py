"""The node's own network namespace, so its kube-proxy's iptables chains (KUBE-SERVICES...) and its pods' bridge
are its own: two sessions' nodes on one machine never rewrite each other's rules.

    host netns                                 node netns (kc<id>): containerd, kubelet, kube-proxy
    kh<id> 10.a.b.1/30  <---- veth ---->  kn<id> 10.a.b.2/30 (the node's address)  192.0.2.2 via 10.a.b.1
                                           cni bridge kc<id> 10.a.b.129/25 -> pods 10.a.b.130...

The apiserver listens on the host's loopback only. The `kubernetes` Service's endpoint is the address it advertises
(the host's own, e.g. 192.0.2.2:P) where nothing listens: a DNAT rule, matched only on kh<id>, sends what comes
from the node for that address to 10.a.b.1:P, where `socat` forwards to 127.0.0.1:P. So the kubelet, kube-proxy and
pods (through kube-proxy's DNAT of 10.0.0.1:443) all reach the apiserver at its advertised address, with its real
certificate. The one rule in the host's tables is this node's own, and removed at stop.
"""
from __future__ import annotations

import ipaddress
import random
import subprocess

from .controlplane import StartupError


def pick_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no route on this machine covers (another session's node has one)."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True,
                            check=True).stdout
    taken = [ipaddress.ip_network(word, strict=False) for line in routes.splitlines()
             for word in line.split()[:2] if "/" in word]
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise StartupError("no free /24 in 10.200.0.0/13 for the node's network")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NodeNetwork:
    """The namespace, its veth to the host, and the path to the apiserver."""

    def __init__(self, node_id: str) -> None:
        self.netns, self.host_if, self.node_if = f"kc{node_id}", f"kh{node_id}", f"kn{node_id}"
        self.bridge = f"kc{node_id}"  # inside the namespace
        self.subnet = pick_subnet()
        base = self.subnet.network_address
        self.host_ip, self.node_ip = str(base + 1), str(base + 2)
        self.pods = ipaddress.ip_network(f"{base + 128}/25")
        self._rules: list[list[str]] = []
        self._host_routes: list[str] = []

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if, "netns", self.netns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        for args in (("addr", "add", f"{self.node_ip}/30", "dev", self.node_if), ("link", "set", self.node_if, "up"),
                     ("link", "set", "lo", "up")):
            _ip("-n", self.netns, *args)

    def route_to(self, address: str) -> None:
        """A route from the node to one host address. There is no default route: what the node or a pod tries
        elsewhere (cloud metadata probes, registries) fails at once instead of timing out (the host forwards
        nothing)."""
        _ip("-n", self.netns, "route", "add", f"{address}/32", "via", self.host_ip)

    def route_host_to_pods(self) -> None:
        """A host route to this node's pods (only these addresses: no other session's): the apiserver then calls
        webhooks at their pods' addresses (--enable-aggregator-routing), and a test reaches a pod directly."""
        _ip("route", "add", str(self.pods), "via", self.node_ip, "dev", self.host_if)
        self._host_routes.append(str(self.pods))

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd` run in the node's network namespace (only: it shares the host's mounts, cgroups and pids)."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", "--", *cmd]

    def forward_apiserver(self, advertised: str, port: int) -> list[str]:
        """Add the DNAT rule for the apiserver's advertised address; returns the `socat` command to run."""
        rule = ["PREROUTING", "-i", self.host_if, "-d", advertised, "-p", "tcp", "--dport", str(port),
                "-j", "DNAT", "--to-destination", f"{self.host_ip}:{port}"]
        subprocess.run(["iptables", "-t", "nat", "-I", *rule], check=True, capture_output=True)
        self._rules.append(rule)
        return ["socat", f"TCP-LISTEN:{port},bind={self.host_ip},fork,reuseaddr", f"TCP:127.0.0.1:{port}"]

    def remove(self) -> None:
        """The host's rule, then the namespace (its veth, bridge and rules go with it). Idempotent."""
        while self._host_routes:
            subprocess.run(["ip", "route", "delete", self._host_routes.pop()], capture_output=True, check=False)
        while self._rules:
            subprocess.run(["iptables", "-t", "nat", "-D", *self._rules.pop()], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.host_if], capture_output=True, check=False)
