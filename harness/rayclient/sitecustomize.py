"""Put on a local Ray head's PYTHONPATH (harness/rayhead.py): with KUBECHAIN_CLIENT_SERVER_PORTS=low-high, Ray
Client's proxy takes its per-client servers' ports from that range instead of its fixed 23000-23999. Two proxies on
one machine otherwise pick the same port now and then, and gRPC servers bind with SO_REUSEPORT: both get it, and a
client may reach the other cluster. Every other process pays one environment lookup."""
import os
import sys

_PORTS = os.environ.get("KUBECHAIN_CLIENT_SERVER_PORTS")
_PROXIER = "ray.util.client.server.proxier"

if _PORTS:
    import importlib.abc
    import importlib.machinery

    class _ProxierPorts(importlib.abc.MetaPathFinder):
        """Sets the proxier module's port bounds right after it runs, before any ProxyManager reads them."""

        def find_spec(self, name, path, target=None):
            if name != _PROXIER:
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                module.MIN_SPECIFIC_SERVER_PORT, module.MAX_SPECIFIC_SERVER_PORT = map(int, _PORTS.split("-"))

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _ProxierPorts())
