"""deploy/k8s NetworkPolicies, evaluated as a CNI enforces them: traffic between MaskWatch's pods and their
peers (ingress controller, Prometheus, Kafka, Redis, cameras, alert webhook, DNS) is allowed exactly along the
flows in deploy/README.md's "Network" table, and every other pair tried here is refused."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy_fixtures import by_kind, overlays, pod_template, prepared_k8s, render

NAMESPACE = "maskwatch"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels, container ports by name) or an address outside the cluster."""

    name: str
    namespace: str | None = None  # None: not a pod
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    named_ports: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.name)


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions); {} selects everything."""
    if selector is None:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, ep: Endpoint) -> bool:
    if "ipBlock" in peer:
        if ep.ip is None:
            return False  # pod addresses are not what ipBlocks are for (and vary by CNI)
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(ep.ip)
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if ep.namespace is None:
        return False
    ns_labels = {"kubernetes.io/metadata.name": ep.namespace}
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif ep.namespace != policy_ns:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], ep.labels)


def _port_matches(ports: list[dict[str, Any]] | None, target: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        number = target.named_ports.get(p["port"]) if isinstance(p.get("port"), str) else p.get("port")
        if number is None or number == port or (p.get("endPort") and number <= port <= p["endPort"]):
            return True
    return False


def allowed(policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether a connection src -> dst:port passes both src's egress and dst's ingress policies."""

    def side(ep: Endpoint, direction: str, peer: Endpoint, rules_key: str, peers_key: str) -> bool:
        if ep.namespace != NAMESPACE:
            return True  # outside the namespace: not fenced by these policies
        selecting = [
            p
            for p in policies
            if _selects(p["spec"]["podSelector"], ep.labels) and direction in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not selecting:
            return True
        for p in selecting:
            for rule in p["spec"].get(rules_key, []):
                peers = rule.get(peers_key)
                if (not peers or any(_peer_matches(x, NAMESPACE, peer) for x in peers)) and _port_matches(
                    rule.get("ports"), dst, port, protocol
                ):
                    return True
        return False

    return side(src, "Egress", dst, "egress", "to") and side(dst, "Ingress", src, "ingress", "from")


def endpoints(objs: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """MaskWatch's pods as rendered (by component), an unrelated pod beside them, and the peers of the example."""
    out: dict[str, Endpoint] = {}
    for obj in objs:
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        template = pod_template(obj)
        labels = dict(template["metadata"]["labels"])
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        out.setdefault(labels["app.kubernetes.io/component"], Endpoint(labels["app.kubernetes.io/component"], NAMESPACE, labels, None, ports))
    peers = [
        Endpoint("other pod in the namespace", NAMESPACE, {"app": "debug"}),
        Endpoint("pod in another namespace", "default", {"app": "shell"}),
        Endpoint("ingress controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        Endpoint("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
        Endpoint("kafka broker", "kafka", {"strimzi.io/kind": "Kafka"}),
        Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}),
        Endpoint("redis", ip="10.20.0.5"),
        Endpoint("camera", ip="192.0.2.10"),
        Endpoint("webhook", ip="203.0.113.80"),
    ]
    out.update({p.name: p for p in peers})
    return out


# The flows MaskWatch needs in the example overlay (deploy/README.md, "Network"): source, destination, port.
FLOWS = {
    ("ingress controller", "dashboard", 5000),
    ("worker", "tf-serving", 8500),
    ("dashboard", "tf-serving", 8500),
    ("prometheus", "worker", 9100),
    ("prometheus", "producer", 9100),
    ("worker", "kafka broker", 9092),
    ("producer", "kafka broker", 9092),
    ("kafka-topics", "kafka broker", 9092),
    ("worker", "redis", 6380),
    ("producer", "redis", 6380),
    ("dashboard", "redis", 6380),
    ("producer", "camera", 554),
    ("producer", "camera", 80),
    ("dashboard", "webhook", 443),
}
OURS = ("tf-serving", "worker", "producer", "dashboard", "kafka-topics")
PORTS = (53, 80, 443, 554, 5000, 6379, 6380, 8500, 8501, 9092, 9093, 9100)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    (overlay,) = [o for o in overlays(prepared_k8s(tmp_path_factory.mktemp("net"))) if o.name == "example"]
    return render(overlay)


@pytest.mark.timeout(60)
def test_example_allows_exactly_the_flows_maskwatch_needs(example: list[dict[str, Any]]) -> None:
    policies = by_kind(example, "NetworkPolicy")
    eps = endpoints(example)
    assert set(OURS) <= set(eps), sorted(eps)
    opened = {
        (src.name, dst.name, port)
        for src in eps.values()
        for dst in eps.values()
        for port in PORTS
        if src != dst and (src.namespace == NAMESPACE or dst.namespace == NAMESPACE)
        and port != 53
        and allowed(policies, src, dst, port)
    }
    assert opened == FLOWS, f"opened beyond the table: {sorted(opened - FLOWS)}; closed: {sorted(FLOWS - opened)}"


@pytest.mark.timeout(60)
def test_every_maskwatch_pod_resolves_names_and_nothing_else_uses_port_53(example: list[dict[str, Any]]) -> None:
    policies = by_kind(example, "NetworkPolicy")
    eps = endpoints(example)
    for name in OURS:
        assert allowed(policies, eps[name], eps["kube-dns"], 53, "UDP"), name
    assert not allowed(policies, eps["other pod in the namespace"], eps["kube-dns"], 53, "UDP")


@pytest.mark.timeout(60)
def test_every_rendering_denies_by_default(tmp_path: Path) -> None:
    """Each rendering with MaskWatch pods carries the default deny (both ways, every pod of the namespace)."""
    from tests.unit.deploy_fixtures import renders

    for label, objs in renders(tmp_path).items():
        deny = [
            p
            for p in by_kind(objs, "NetworkPolicy")
            if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")
        ]
        assert len(deny) == 1, label
