"""First-start content of the marea OpenStack testbed, run with the testbed venv's python.

Steps (each idempotent, so a half-failed first start can be retried):
  catalog STATE   service users, endpoints, the `demo` project and user; writes STATE/clouds.yaml
  content STATE   image, flavours (one with a GPU in its extra specs), an external network with a floating-IP
                  pool, the demo project's private network, subnet and router (as on a real tenant project)
  computes N      wait until N nova-compute services report up
  guest-images D  upload D/batch.tar and D/base.tar (testbeds/guests.sh) as the public images debian-13-batch
                  and debian-13-base (container_format docker: a root filesystem the guest driver boots);
                  an image already there with the same checksum is kept

Passwords here are test-only ("secret") and never leave loopback.
"""

import hashlib
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import openstack  # noqa: E402

PASSWORD = "secret"
#: the address on the guests' bridge: the host and the guests reach every endpoint there
API_IP = os.environ.get("MAREA_OS_API_IP", "10.10.0.1")
AUTH_URL = f"http://{API_IP}:5000/v3"
SERVICES = {  # user name: (service type, endpoint)
    "nova": ("compute", f"http://{API_IP}:8774/v2.1"),
    "placement": ("placement", f"http://{API_IP}:8778"),
    "glance": ("image", f"http://{API_IP}:9292"),
    "neutron": ("network", f"http://{API_IP}:9696"),
}
GUEST_IMAGES = {"debian-13-batch": "batch.tar", "debian-13-base": "base.tar"}
FLAVOURS = (  # name, RAM MiB, vCPUs, disk GB, extra specs
    ("m1.tiny", 512, 1, 1, {}),
    ("m1.small", 2048, 1, 20, {}),
    ("m1.medium", 4096, 2, 40, {}),
    ("m1.large", 8192, 4, 80, {}),
    ("g1.large", 16384, 8, 80, {"resources:VGPU": "1"}),
)


def connect(user: str = "admin") -> openstack.connection.Connection:
    return openstack.connect(
        auth_url=AUTH_URL,
        username=user,
        password=PASSWORD,
        project_name=user,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )


def catalog(state: str) -> None:
    idn = connect().identity
    service = idn.find_project("service") or idn.create_project(name="service", domain_id="default")
    roles = {r: idn.find_role(r) or idn.create_role(name=r) for r in ("admin", "service", "member")}
    for user_name, (stype, url) in SERVICES.items():
        user = idn.find_user(user_name, domain_id="default") or idn.create_user(
            name=user_name, password=PASSWORD, domain_id="default"
        )
        for role in ("admin", "service"):
            idn.assign_project_role_to_user(service, user, roles[role])
        svc = next((s for s in idn.services() if s.type == stype), None) or idn.create_service(
            name=user_name, type=stype
        )
        have = {e.interface for e in idn.endpoints(service_id=svc.id)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                idn.create_endpoint(service_id=svc.id, interface=iface, url=url, region_id="RegionOne")
    demo = idn.find_project("demo") or idn.create_project(name="demo", domain_id="default")
    demo_user = idn.find_user("demo", domain_id="default") or idn.create_user(
        name="demo", password=PASSWORD, default_project_id=demo.id, domain_id="default"
    )
    idn.assign_project_role_to_user(demo, demo_user, roles["member"])
    with open(f"{state}/clouds.yaml", "w") as out:
        out.write("clouds:\n")
        for name in ("admin", "demo"):
            out.write(
                f"  {name}:\n    auth:\n      auth_url: {AUTH_URL}\n      username: {name}\n"
                f"      password: {PASSWORD}\n      project_name: {name}\n"
                "      user_domain_name: Default\n      project_domain_name: Default\n"
                "    region_name: RegionOne\n    identity_api_version: 3\n"
            )


def content() -> None:
    admin = connect()
    if admin.image.find_image("debian-12") is None:
        admin.image.create_image(
            name="debian-12",
            data=b"\0" * 1024,
            disk_format="raw",
            container_format="bare",
            visibility="public",
            wait=True,
        )
    for name, ram, vcpus, disk, specs in FLAVOURS:
        flavour = admin.compute.find_flavor(name)
        if flavour is None:
            flavour = admin.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
            if specs:
                admin.compute.create_flavor_extra_specs(flavour, specs)
    net = admin.network
    public = net.find_network("public")
    if public is None:
        public = net.create_network(
            name="public",
            is_router_external=True,
            provider_network_type="flat",
            provider_physical_network="public",
        )
        net.create_subnet(
            network_id=public.id,
            name="public-subnet",
            ip_version=4,
            cidr="172.24.4.0/24",
            gateway_ip="172.24.4.1",
            allocation_pools=[{"start": "172.24.4.10", "end": "172.24.4.250"}],
            is_dhcp_enabled=False,
        )
    demo = connect("demo").network
    private = demo.find_network("private")
    if private is None:
        private = demo.create_network(name="private")
        # no DHCP agent runs here: with DHCP off, Nova's config drive carries each port's static address,
        # gateway and routes (network_data.json), which cloud-init applies, as on clouds that inject networks
        subnet = demo.create_subnet(
            network_id=private.id,
            name="private-subnet",
            ip_version=4,
            cidr="10.10.0.0/24",
            gateway_ip=API_IP,
            is_dhcp_enabled=False,
        )
        router = demo.create_router(name="demo-router", external_gateway_info={"network_id": public.id})
        demo.add_interface_to_router(router, subnet_id=subnet.id)


def guest_images(directory: str) -> None:
    admin = connect()
    for name, file in GUEST_IMAGES.items():
        path = os.path.join(directory, file)
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        existing = admin.image.find_image(name)
        if existing is not None and existing.checksum == digest.hexdigest():
            if existing.os_admin_user != "debian":
                admin.image.update_image(existing, os_distro="debian", os_admin_user="debian")
            continue
        if existing is not None:
            admin.image.delete_image(existing)
        with open(path, "rb") as f:
            admin.image.create_image(
                name=name,
                data=f,
                disk_format="raw",
                container_format="docker",
                visibility="public",
                wait=True,
                # standard image properties: who logs in (marea cluster ssh reads them)
                os_distro="debian",
                os_admin_user="debian",
            )


def computes(want: int) -> None:
    compute = connect().compute
    deadline = time.time() + 120
    while time.time() < deadline:
        services = list(compute.services())
        up = [s for s in services if s.state == "up"]
        if len([s for s in up if s.binary == "nova-compute"]) >= want and len(up) >= want + 2:
            return
        time.sleep(1)
    sys.exit("nova-compute did not come up within 120 s")


if __name__ == "__main__":
    step = sys.argv[1]
    if step == "catalog":
        catalog(sys.argv[2])
    elif step == "content":
        content()
    elif step == "guest-images":
        guest_images(sys.argv[2])
    elif step == "computes":
        computes(int(sys.argv[2]))
    else:
        sys.exit(f"unknown step {step!r}")
