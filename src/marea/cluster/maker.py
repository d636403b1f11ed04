"""Create, inspect and destroy a cluster on OpenStack: a master VM with the only floating IP, workers by marea.

Ownership, so that destroy removes exactly what create made and nothing else:
- servers carry `marea-cluster = <name>` in their metadata (the master also `marea-role = master`, and no
  `marea-instance`, so the engine never adopts it as a worker);
- Neutron resources (security groups, the master's port, the floating IP) carry the tag
  `marea-cluster=<name>`;
- the keypair is `marea-<name>`, and only deleted when the master's metadata says this cluster created it.
Floating IPs are the project's, not the cluster's: create reuses a free one before allocating, and destroy
keeps it allocated (untagged, free for the next cluster) unless asked to release it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from marea import profiles
from marea.clouds.base import TAG_CLUSTER, TAG_INSTANCE, CloudError, CloudErrorKind, CloudVM, VMStatus
from marea.clouds.openstack import OpenStackCloud
from marea.cluster.cloudinit import master_user_data
from marea.cluster.config import ClusterFile
from marea.extras import require
from marea.profiles.joins import JoinSecrets, make_join_secrets

log = logging.getLogger("marea.cluster")

TAG_ROLE = "marea-role"
TAG_KEYPAIR = "marea-keypair"
#: the clouds.yaml entry the master's engine uses (its application credential)
MASTER_CLOUD = "marea"
#: settings of [cloud.openstack] the master keeps; every way of authenticating is replaced by MASTER_CLOUD
MASTER_CLOUD_KEYS = frozenset(
    {"region_name", "image", "network", "security_groups", "key_name", "boot_timeout_s", "parallel_creates"}
)

#: a step's description, and how far the whole operation is (0..1)
Progress = Callable[[str, float], None]


def _quiet(step: str, fraction: float) -> None:
    log.info("%s", step)


def _image_id(server: Any) -> str | None:
    """The id in a server's `image` ({"id": ...}; empty for a server booted from a volume)."""
    try:
        value = server.image["id"]
    except (KeyError, TypeError, AttributeError):
        return None
    return str(value) if value else None


@dataclass
class ClusterStatus:
    name: str
    master: CloudVM | None = None
    floating_ip: str | None = None
    workers: list[CloudVM] = field(default_factory=list)
    #: Glance id of the image the master booted from (`marea cluster ssh` reads its login user there)
    master_image: str | None = None


@dataclass
class DestroyReport:
    servers: int = 0
    security_groups: int = 0
    ports: int = 0
    floating_ips_kept: list[str] = field(default_factory=list)
    floating_ips_released: list[str] = field(default_factory=list)
    keypair_deleted: bool = False
    credential_deleted: bool = False


class ClusterMaker:
    def __init__(self, cf: ClusterFile, driver: OpenStackCloud | None = None) -> None:
        self.cf = cf
        self.name = cf.marea.cluster.name
        self.tag = f"{TAG_CLUSTER}={self.name}"
        if driver is None:
            require("openstack", "keystoneauth1")
        self.driver = driver or OpenStackCloud(cf.marea.cloud.openstack)
        #: the keypair the running create made (a failed create deletes it; destroy finds it on the master)
        self._created_keypair: str | None = None

    @property
    def conn(self) -> Any:
        return self.driver.conn

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except CloudError:
            raise
        except Exception as exc:
            raise self.driver.error(exc, what) from None

    def _tag(self, resource: Any) -> None:
        self._call("tag resource", self.conn.network.set_tags, resource, [self.tag])

    # -- create ----------------------------------------------------------------------------------------------
    def _security_groups(self) -> tuple[Any, Any]:
        net = self.conn.network
        groups = []
        for role in ("master", "workers"):
            group = self._call(
                "create security group",
                net.create_security_group,
                name=f"marea-{self.name}-{role}",
                description=f"marea cluster {self.name}: {role}",
            )
            self._tag(group)
            groups.append(group)
        master, workers = groups
        profile = profiles.get(self.cf.marea.batch.system)
        rules: list[dict[str, Any]] = [
            {"security_group_id": master.id, "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
             "remote_ip_prefix": self.cf.master.ssh_cidr},
        ]  # fmt: skip
        opened = [
            *((master, "tcp", port) for port in profile.master_ports),
            *((master, "udp", port) for port in profile.master_udp_ports),
            *((workers, "udp", port) for port in profile.worker_udp_ports),
        ]
        for group, protocol, port in opened:
            for remote in (master.id, workers.id):
                rules.append({"security_group_id": group.id, "protocol": protocol, "port_range_min": port,
                              "port_range_max": port, "remote_group_id": remote})  # fmt: skip
        for remote in (master.id, workers.id):  # workers: every TCP port from the cluster (MPI, srun, ...)
            rules.append({"security_group_id": workers.id, "protocol": "tcp", "port_range_min": 1,
                          "port_range_max": 65535, "remote_group_id": remote})  # fmt: skip
        for rule in rules:
            self._call("create rule", net.create_security_group_rule, direction="ingress", ethertype="IPv4", **rule)
        log.info(
            "security groups ready; master ports %s (udp %s), workers %s (udp %s)",
            profile.master_ports,
            profile.master_udp_ports,
            profile.worker_ports,
            profile.worker_udp_ports,
        )
        return master, workers

    def _keypair(self) -> str | None:
        """The keypair the master gets; created as `marea-<name>` when a public key is configured."""
        key = self.cf.master.ssh_public_key.strip()
        if not key:
            return self.cf.marea.cloud.openstack.key_name or None
        name = f"marea-{self.name}"
        existing = self._call("find keypair", self.conn.compute.find_keypair, name, ignore_missing=True)
        if existing is not None:
            raise CloudError(f"keypair {name} already exists: destroy the old cluster or pick another name")
        self._call("create keypair", self.conn.compute.create_keypair, name=name, public_key=key)
        self._created_keypair = name
        return name

    def _floating_ip(self, port: Any) -> Any:
        """Reuse a free floating IP of the project on the external network, else allocate one."""
        net = self.conn.network
        ext = self._call("find network", net.find_network, self.cf.master.floating_network, ignore_missing=True)
        if ext is None:
            raise CloudError(
                f"external network {self.cf.master.floating_network!r} not found", CloudErrorKind.NOT_FOUND
            )
        free = [ip for ip in self._call("list floating IPs", net.ips, floating_network_id=ext.id) if not ip.port_id]
        if free:
            fip = free[0]
            log.info("reusing the project's free floating IP %s", fip.floating_ip_address)
            fip = self._call("associate floating IP", net.update_ip, fip, port_id=port.id)
        else:
            fip = self._call("allocate floating IP", net.create_ip, floating_network_id=ext.id, port_id=port.id)
            log.info("allocated floating IP %s", fip.floating_ip_address)
        self._tag(fip)
        return fip

    # -- the master's own credential ---------------------------------------------------------------------------
    @property
    def credential_name(self) -> str:
        return f"marea-{self.name}"

    def _application_credential(self) -> tuple[str, str]:
        """A restricted application credential for the master's engine: (id, secret).

        The master never gets the admin's password or token: Keystone makes a credential bound to this project,
        with only `master.credential_roles`, that cannot create further credentials or trusts, and that
        destroy revokes. The secret is shown once by Keystone and goes only into the master's 0600 clouds.yaml.
        """
        identity = self.conn.identity
        user = self.conn.current_user_id
        if self._own_credentials():
            raise CloudError(
                f"application credential {self.credential_name} already exists: destroy the old cluster first"
            )
        cred = self._call(
            "create application credential",
            identity.create_application_credential,
            user=user,
            name=self.credential_name,
            description=f"marea cluster {self.name}: the master's elastic engine",
            roles=[{"name": r} for r in self.cf.master.credential_roles],
            unrestricted=False,
        )
        self.driver.add_secrets([cred.secret])
        return cred.id, cred.secret

    def _own_credentials(self) -> list[Any]:
        """The current user's application credentials named after this cluster."""
        listed = self._call(
            "list application credentials", self.conn.identity.application_credentials, user=self.conn.current_user_id
        )
        return [cred for cred in listed if cred.name == self.credential_name]

    def _delete_application_credential(self) -> bool:
        creds = self._own_credentials()
        for cred in creds:
            self._call(
                "delete application credential",
                self.conn.identity.delete_application_credential,
                self.conn.current_user_id,
                cred,
            )
        return bool(creds)

    def _clouds_yaml(self, credential: tuple[str, str]) -> str:
        """The master's clouds.yaml: one cloud, `marea`, authenticated by the application credential."""
        auth_url = self._call(
            "find the identity endpoint",
            self.conn.session.get_endpoint,
            service_type="identity",
            interface="public",
        )
        entry: dict[str, Any] = {
            "auth_type": "v3applicationcredential",
            "auth": {
                "auth_url": auth_url,
                "application_credential_id": credential[0],
                "application_credential_secret": credential[1],
            },
            "identity_api_version": "3",
        }
        region = self.conn.config.get_region_name()
        if region:
            entry["region_name"] = region
        return json.dumps({"clouds": {MASTER_CLOUD: entry}}, indent=2) + "\n"

    def _master_file(self, workers_sg: Any, key_name: str | None) -> ClusterFile:
        """The cluster file as the master's engine runs it: the master's own cloud entry (never the admin's
        credentials), the workers' security group and the keypair."""
        data = json.loads(json.dumps(self.cf.marea_data))
        section = data.setdefault("cloud", {}).get("openstack", {})
        os_section = {k: v for k, v in section.items() if k in MASTER_CLOUD_KEYS}
        os_section["cloud"] = MASTER_CLOUD
        os_section["security_groups"] = [*os_section.get("security_groups", []), workers_sg.name]
        if key_name:
            os_section["key_name"] = key_name
        data["cloud"]["openstack"] = os_section
        return replace(self.cf, marea_data=data)

    def master_user_data(
        self, joins: JoinSecrets, master_ip: str, workers_sg: Any, key: str | None, credential: tuple[str, str]
    ) -> str:
        return master_user_data(self._master_file(workers_sg, key), joins, master_ip, self._clouds_yaml(credential))

    def create(self, progress: Progress = _quiet) -> ClusterStatus:
        """Create the cluster; when a step fails, remove what this call made (a floating IP stays allocated)."""
        if self._master_server() is not None:
            raise CloudError(f"cluster {self.name} already has a master: use status, or destroy it first")
        if list(self._call("list security groups", self.conn.network.security_groups, tags=self.tag)):
            raise CloudError(f"cluster {self.name} has resources left from an earlier create: destroy it first")
        self._created_keypair = None
        try:
            return self._create(progress)
        except CloudError as exc:
            log.warning("create failed (%s): removing what was created", exc.reason)
            try:
                self.destroy(release_floating_ips=False)
                if self._created_keypair:
                    self._call("delete keypair", self.conn.compute.delete_keypair, self._created_keypair,
                               ignore_missing=True)  # fmt: skip
            except CloudError as cleanup:
                raise CloudError(f"{exc.reason}; cleanup also failed: {cleanup.reason}", exc.kind) from None
            raise CloudError(f"{exc.reason} (everything created was removed)", exc.kind) from None

    def _create(self, progress: Progress) -> ClusterStatus:
        cf, net, compute = self.cf, self.conn.network, self.conn.compute
        progress("security groups", 0.05)
        master_sg, workers_sg = self._security_groups()
        progress("keypair", 0.15)
        key_name = self._keypair()
        progress("master port", 0.2)
        network = self._call("find network", net.find_network, cf.marea.cloud.openstack.network, ignore_missing=True)
        if network is None:
            raise CloudError(f"network {cf.marea.cloud.openstack.network!r} not found", CloudErrorKind.NOT_FOUND)
        port = self._call("create port", net.create_port, network_id=network.id, name=f"marea-{self.name}-master",
                          security_group_ids=[master_sg.id])  # fmt: skip
        self._tag(port)
        master_ip = port.fixed_ips[0]["ip_address"]
        joins = make_join_secrets(cf.marea.batch.system, self.name)
        self.driver.add_secrets(joins.secrets())
        progress("application credential", 0.25)
        credential = self._application_credential()
        user_data = self.master_user_data(joins, master_ip, workers_sg, key_name, credential)
        progress("master server", 0.3)
        metadata = {TAG_CLUSTER: self.name, TAG_ROLE: "master"}
        if key_name and cf.master.ssh_public_key.strip():
            metadata[TAG_KEYPAIR] = key_name
        args: dict[str, Any] = {
            "name": f"{self.name}-master",
            "flavor_id": self.driver._resolve("flavour", cf.master.flavour),
            "image_id": self.driver._resolve("image", cf.master.image or cf.marea.cloud.openstack.image),
            "networks": [{"port": port.id}],
            "metadata": metadata,
            "user_data": base64.b64encode(user_data.encode()).decode(),
        }
        if key_name:
            args["key_name"] = key_name
        server = self._call("create master", compute.create_server, **args)
        progress("floating IP", 0.4)
        self._floating_ip(port)
        deadline = time.monotonic() + cf.master.boot_timeout_s
        while True:
            vm = self.driver.to_vm(self._call("read master", compute.get_server, server.id))
            if vm.status is VMStatus.ACTIVE:
                break
            if vm.status is VMStatus.ERROR:
                raise CloudError(f"master went to ERROR: {vm.fault or 'no fault given'}", CloudErrorKind.ERROR_STATE)
            if time.monotonic() > deadline:
                raise CloudError("master not ACTIVE before master.boot_timeout_s", CloudErrorKind.TIMEOUT)
            progress("waiting for the master to be ACTIVE", 0.5)
            time.sleep(1.0)
        progress("master ACTIVE", 1.0)
        return self.status()

    # -- status ----------------------------------------------------------------------------------------------
    def _owned_servers(self) -> list[Any]:
        servers = self._call("list servers", self.conn.compute.servers, details=True)
        return [s for s in servers if (s.metadata or {}).get(TAG_CLUSTER) == self.name]

    def _master_server(self) -> Any:
        return next((s for s in self._owned_servers() if (s.metadata or {}).get(TAG_ROLE) == "master"), None)

    def status(self) -> ClusterStatus:
        st = ClusterStatus(self.name)
        for server in self._owned_servers():
            vm = self.driver.to_vm(server)
            if vm.status is VMStatus.DELETED:
                continue
            if vm.tags.get(TAG_ROLE) == "master":
                st.master = vm
                st.master_image = _image_id(server)
            elif vm.tags.get(TAG_INSTANCE):
                st.workers.append(vm)
        st.workers.sort(key=lambda v: v.name)
        fips = self._call("list floating IPs", self.conn.network.ips, tags=self.tag)
        st.floating_ip = next((ip.floating_ip_address for ip in fips), None)
        return st

    # -- destroy ---------------------------------------------------------------------------------------------
    def destroy(self, release_floating_ips: bool = False, progress: Progress = _quiet) -> DestroyReport:
        net, report = self.conn.network, DestroyReport()
        # the master first: its engine creates workers, and a worker it starts while the others are being
        # deleted would be left behind
        servers = sorted(self._owned_servers(), key=lambda s: (s.metadata or {}).get(TAG_ROLE) != "master")
        keypair = next((s.metadata.get(TAG_KEYPAIR) for s in servers if (s.metadata or {}).get(TAG_KEYPAIR)), None)
        asked: set[str] = set()
        for i, server in enumerate(servers):
            progress(f"deleting server {server.name}", 0.5 * i / max(1, len(servers)))
            self.driver.delete(self.driver.to_vm(server))
            asked.add(server.id)
        deadline = time.monotonic() + 300
        while True:
            left = [s for s in self._owned_servers() if str(s.status).upper() not in ("DELETED", "SOFT_DELETED")]
            for late in (s for s in left if s.id not in asked):  # created by the engine before its master went
                self.driver.delete(self.driver.to_vm(late))
                asked.add(late.id)
            if not left:
                break
            if time.monotonic() > deadline:
                raise CloudError(f"{len(left)} server(s) still not deleted after 300 s", CloudErrorKind.TIMEOUT)
            progress(f"waiting for {len(left)} server(s) to go", 0.5)
            time.sleep(1.0)
        report.servers = len(asked)
        progress("floating IPs", 0.6)
        for fip in self._call("list floating IPs", net.ips, tags=self.tag):
            if release_floating_ips:
                self._call("release floating IP", net.delete_ip, fip, ignore_missing=True)
                report.floating_ips_released.append(fip.floating_ip_address)
            else:
                if fip.port_id:
                    self._call("disassociate floating IP", net.update_ip, fip, port_id=None)
                self._call("untag floating IP", net.set_tags, fip, [])
                report.floating_ips_kept.append(fip.floating_ip_address)
        progress("ports", 0.7)
        for port in self._call("list ports", net.ports, tags=self.tag):
            self._call("delete port", net.delete_port, port, ignore_missing=True)
            report.ports += 1
        progress("security groups", 0.8)
        groups = list(self._call("list security groups", net.security_groups, tags=self.tag))
        for group in groups:  # rules of one group may reference the other: drop the rules first
            for rule in self._call("list rules", net.security_group_rules, security_group_id=group.id):
                self._call("delete rule", net.delete_security_group_rule, rule, ignore_missing=True)
        for group in groups:
            self._delete_group(group)
            report.security_groups += 1
        progress("application credential", 0.85)
        report.credential_deleted = self._delete_application_credential()
        if keypair:
            progress("keypair", 0.9)
            self._call("delete keypair", self.conn.compute.delete_keypair, keypair, ignore_missing=True)
            report.keypair_deleted = True
        progress("destroyed", 1.0)
        return report

    def _delete_group(self, group: Any) -> None:
        """Neutron refuses (409) while a port still uses the group; ports of deleted servers go shortly."""
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: getattr(exc, "status_code", None) == 409),
            stop=stop_after_delay(60),
            wait=wait_fixed(1.0),
            reraise=True,
        )
        try:
            retrying(self.conn.network.delete_security_group, group, ignore_missing=True)
        except Exception as exc:
            raise self.driver.error(exc, f"delete security group {group.name}") from None
