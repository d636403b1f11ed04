"""Build the cloud driver a configuration asks for."""

from __future__ import annotations

from marea.clouds.base import CloudDriver
from marea.config import MareaConfig
from marea.extras import require


def make_cloud(cfg: MareaConfig) -> CloudDriver:
    driver = cfg.cloud.driver
    if driver == "local":
        from marea.clouds.local import LocalCloud

        s = cfg.cloud.local
        return LocalCloud(
            cfg.path(s.base_dir),
            netns=s.netns,
            bridge_netns=s.bridge_netns,
            bridge=s.bridge,
            subnet=s.subnet,
            first_host=s.first_host,
        )
    if driver == "openstack":
        from marea.clouds.openstack import OpenStackCloud

        require("openstack", "keystoneauth1")

        return OpenStackCloud(cfg.cloud.openstack, parallel_creates=cfg.cloud.openstack.parallel_creates)
    if driver == "ec2":
        from marea.clouds.ec2 import Ec2Cloud

        require("boto3")

        return Ec2Cloud(cfg.cloud.ec2)
    raise NotImplementedError(f"cloud driver {driver!r} is not available in this build")
