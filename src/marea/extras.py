"""Optional extras: which `pip install 'marea[...]'` brings a missing module, said in one line.

Why: marea's core installs without numpy, openstacksdk, boto3, the HTCondor bindings or psycopg, and imports
them only where they are used. A user who runs `marea simulate` without the `sim` extra must read which extra
to install, not a traceback ending in `No module named 'numpy'`. The CLI's entry point turns any
ModuleNotFoundError for one of these modules into that line; the table below is the one place that maps an
importable module to the extra (in pyproject.toml) that installs it, and a test checks it against
pyproject.toml.
"""

from __future__ import annotations

#: top-level importable module -> the extra of pyproject.toml whose packages provide it
MODULE_EXTRAS: dict[str, str] = {
    "numpy": "sim",
    "matplotlib": "sim",
    "openstack": "openstack",
    "keystoneauth1": "openstack",
    "cryptography": "openstack",
    "boto3": "ec2",
    "botocore": "ec2",
    "htcondor": "htcondor",
    "htcondor2": "htcondor",
    "classad": "htcondor",
    "classad2": "htcondor",
    "psycopg": "postgres",
    "grafana_foundation_sdk": "grafana",
    "kubernetes": "kubernetes",
}

#: what each extra is for, to say in the message
EXTRA_PURPOSE: dict[str, str] = {
    "sim": "`marea simulate`",
    "openstack": "the OpenStack cloud driver and the cluster maker",
    "ec2": "the EC2 cloud driver",
    "htcondor": "HTCondor clusters and the htcondor offload backend",
    "postgres": "a PostgreSQL state database",
    "grafana": "`marea dashboards grafana`",
    "kubernetes": 'the elastic Kubernetes driver (batch.system = "kubernetes")',
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """The one-line advice for a module an extra provides, or None when `exc` is about another module."""
    name = (exc.name or "").split(".")[0]
    extra = MODULE_EXTRAS.get(name)
    if extra is None:
        return None
    return (
        f"{EXTRA_PURPOSE[extra]} needs the Python module {name!r}, which is not installed: pip install 'marea[{extra}]'"
    )


def require(*modules: str) -> None:
    """Import `modules` now, so that a missing extra stops a command at its start with the one-line advice,
    rather than deep inside a reconcile cycle that logs the same ImportError every few seconds."""
    import importlib

    for module in modules:
        importlib.import_module(module)
