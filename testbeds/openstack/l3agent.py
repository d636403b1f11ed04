"""The testbed's stand-in for Neutron's L3 agent: floating IPs that really reach their servers.

Run by testbeds/openstack.sh with the testbed venv's python. Every second it reads the floating IPs bound to a
port (as admin, every project) and makes the iptables chain MAREA-FIP of the nat table say exactly that: one
DNAT rule per floating IP, from the floating address to the port's fixed address, for packets from the host
itself (OUTPUT) and from the bridge (PREROUTING). A real L3 agent does the same in the router's namespace.
Test-only: the admin password is the testbed's ("secret").
"""

import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import openstack  # noqa: E402

from bootstrap import connect  # noqa: E402

CHAIN = "MAREA-FIP"


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", "-t", "nat", *args], capture_output=True, text=True, check=check)


def ensure_chain() -> None:
    if iptables("-L", CHAIN, "-n", check=False).returncode != 0:
        iptables("-N", CHAIN)
    for hook in ("OUTPUT", "PREROUTING"):
        if iptables("-C", hook, "-j", CHAIN, check=False).returncode != 0:
            iptables("-I", hook, "-j", CHAIN)


def wanted(conn: openstack.connection.Connection) -> set[tuple[str, str]]:
    return {
        (ip.floating_ip_address, ip.fixed_ip_address)
        for ip in conn.network.ips()
        if ip.port_id and ip.fixed_ip_address
    }


def current() -> set[tuple[str, str]]:
    rules = set()
    for line in iptables("-S", CHAIN).stdout.splitlines():
        parts = line.split()
        if "-d" in parts and "--to-destination" in parts:
            rules.add((parts[parts.index("-d") + 1].split("/")[0], parts[parts.index("--to-destination") + 1]))
    return rules


def sync(want: set[tuple[str, str]]) -> None:
    have = current()
    for fip, fixed in have - want:
        iptables("-D", CHAIN, "-d", f"{fip}/32", "-j", "DNAT", "--to-destination", fixed, check=False)
    for fip, fixed in want - have:
        iptables("-A", CHAIN, "-d", f"{fip}/32", "-j", "DNAT", "--to-destination", fixed)


def main() -> None:
    ensure_chain()
    conn = None
    while True:
        try:
            conn = conn or connect()
            sync(wanted(conn))
        except Exception as exc:  # the cloud restarting, a transient 5xx: try again next second
            print(f"l3agent: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            conn = None
        time.sleep(1.0)


if __name__ == "__main__":
    main()
