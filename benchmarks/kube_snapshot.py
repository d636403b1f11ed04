"""Time of one snapshot of the Kubernetes driver: two LISTs through the official client over HTTPS, parsing,
flavour matching, per-Node accounting, against the API stand-in (tests/kube/fake_cluster.py, schema checks off).

    .venv/bin/python benchmarks/kube_snapshot.py [--pods 5000] [--nodes 200] [--rounds 5]

Half the pods run on marea's Nodes (a quarter of them DaemonSet pods), half are Unschedulable, a tenth of those
pinned to an instance type. The stand-in's serving time is part of what is timed (a real API server's is too);
the figure is an upper bound of the driver's own cost, to compare with an engine cycle (tens of seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kube.conftest import make_ca, server_cert, write_kubeconfig  # noqa: E402
from tests.kube.fake_cluster import FakeCluster  # noqa: E402
from tests.offload.fake_kube import TOKEN  # noqa: E402

from marea.batch.kubernetes import KubernetesBatch  # noqa: E402
from marea.config import KubernetesSection  # noqa: E402
from marea.model import Flavour  # noqa: E402

FLAVOURS = (Flavour("m1.small", 2, 4096), Flavour("m1.big", 8, 16384), Flavour("g1.gpu", 8, 32768, 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=5000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    pem = make_ca(d)
    cert, key = server_cert(d)
    fake = FakeCluster((cert, key, str(d / "ca-rsa.crt"))).start()
    fake.validate = False
    try:
        for i in range(args.nodes):
            fake.register_node(f"kc-{i:06x}", "kc", "m1.big", TOKEN, cpu="8", memory="16Gi")
        for i in range(args.pods):
            if i % 2:
                owner = "DaemonSet" if i % 4 == 1 else "ReplicaSet"
                fake.add_pod("jobs", f"run-{i}", "100m", "128Mi", unschedulable=False, owner=owner)
                fake.bind("jobs", f"run-{i}", f"kc-{i % args.nodes:06x}")
            else:
                pin = {"node.kubernetes.io/instance-type": "m1.big"} if i % 20 == 0 else None
                fake.add_pod("jobs", f"wait-{i}", "1", "1Gi", node_selector=pin)
        batch = KubernetesBatch(KubernetesSection(kubeconfig=str(write_kubeconfig(d / "kc", fake.url, pem))), "kc")
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            snap = batch.snapshot(FLAVOURS)
            times.append(time.perf_counter() - t)
        batch.close()
        demand = sum(g.count for g in snap.demand)
        print(
            f"{args.pods} pods ({demand} unschedulable), {len(snap.workers)} nodes: snapshot median "
            f"{statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms over {args.rounds} rounds"
        )
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
