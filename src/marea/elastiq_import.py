"""`marea config import-elastiq`: turn an elastiq.conf (INI) into a commented marea.toml.

Every key elastiq documents is read, from [elastiq] (also spelled [elastiqa], as in CloudVeneto's config),
[ec2], [quota], [debug] and [substitute]. Keys with no equivalent, or whose meaning changes, get a comment that
says so, because a silent change of meaning is how an autoscaler surprises its admin. Secrets are carried over
into the output (the admin asked for a working config) but never logged or put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import json
from pathlib import Path

from marea.config import ConfigError

#: every key elastiq reads, with its default (dberzano/elastiq, pylib/elastiq/__init__.py)
ELASTIQ_KEYS: dict[str, dict[str, str]] = {
    "elastiq": {
        "sleep_s": "5",
        "check_queue_every_s": "15",
        "check_vms_every_s": "45",
        "check_vms_in_error_every_s": "20",
        "estimated_vm_deploy_time_s": "600",
        "waiting_jobs_threshold": "0",
        "waiting_jobs_time_s": "40",
        "n_jobs_per_vm": "4",
        "idle_for_time_s": "3600",
        "batch_plugin": "htcondor",
        "log_level": "0",
    },
    "ec2": {
        "api_url": "",
        "api_version": "",
        "aws_access_key_id": "",
        "aws_secret_access_key": "",
        "image_id": "",
        "key_name": "",
        "flavour": "",
        "user_data_b64": "",
    },
    "quota": {"min_vms": "0", "max_vms": "3"},
    "debug": {"dry_run_shutdown_vms": "0", "dry_run_boot_vms": "0"},
    "substitute": {"ipv4": "", "ipv6": "", "fqdn": ""},
}
SECTION_ALIASES = {"elastiqa": "elastiq"}


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _number(section: str, key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"[{section}] {key}: expected a number, got {raw!r}") from None


def read_elastiq(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path) as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid elastiq.conf: {exc.message.splitlines()[0]}") from None
    values: dict[str, dict[str, str]] = {s: {} for s in ELASTIQ_KEYS}
    unknown: list[str] = []
    for section in parser.sections():
        target = SECTION_ALIASES.get(section, section)
        if target not in ELASTIQ_KEYS:
            unknown.append(f"[{section}]")
            continue
        for key, raw in parser.items(section):
            if key not in ELASTIQ_KEYS[target]:
                unknown.append(f"[{section}] {key}")
            values[target][key] = raw.strip()
    values["_unknown"] = {k: "" for k in unknown}
    values["_aliased"] = {s: "" for s in parser.sections() if s in SECTION_ALIASES}
    return values


def convert(path: Path) -> str:
    """The marea.toml text equivalent to an elastiq.conf."""
    v = read_elastiq(path)
    e = {**ELASTIQ_KEYS["elastiq"], **v["elastiq"]}
    ec2 = {**ELASTIQ_KEYS["ec2"], **v["ec2"]}
    q = {**ELASTIQ_KEYS["quota"], **v["quota"]}
    n_jobs_per_vm = int(_number("elastiq", "n_jobs_per_vm", e["n_jobs_per_vm"]))
    deploy = _number("elastiq", "estimated_vm_deploy_time_s", e["estimated_vm_deploy_time_s"])
    idle = _number("elastiq", "idle_for_time_s", e["idle_for_time_s"])
    min_vms = int(_number("quota", "min_vms", q["min_vms"]))
    max_vms = int(_number("quota", "max_vms", q["max_vms"]))
    plugin = e["batch_plugin"].strip().lower()
    if plugin not in ("htcondor", "slurm"):
        raise ConfigError(f"[elastiq] batch_plugin: unsupported batch plugin {plugin!r} (htcondor or slurm)")
    user_data = ""
    if ec2["user_data_b64"]:
        try:
            user_data = base64.b64decode(ec2["user_data_b64"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError("[ec2] user_data_b64: not valid base64-encoded text") from None

    out: list[str] = [f"# marea.toml converted from {path} by `marea config import-elastiq`.", ""]
    if v["_aliased"]:
        out.append("# note: section [elastiqa] was read as elastiq's [elastiq] section.")
    for key in v["_unknown"]:
        out.append(f"# note: {key} is not an elastiq key and was ignored.")
    out += [
        "[cluster]",
        'name = "elastiq"',
        'state = "marea-state.db"',
        "",
        "[engine]",
        "# elastiq checked the queue every check_queue_every_s "
        f"({e['check_queue_every_s']} s) and VMs every check_vms_every_s ({e['check_vms_every_s']} s);",
        "# marea reconciles both in one loop; sleep_s and check_vms_in_error_every_s have no equivalent.",
        "interval_s = 5",
        "",
        "[policy]",
        f"min_workers = {min_vms}  # [quota] min_vms",
        f"max_workers = {max_vms}  # [quota] max_vms",
        f"idle_threshold_s = {idle:g}  # idle_for_time_s; marea drains the worker first, elastiq killed it",
        f"join_timeout_s = {deploy:g}  # estimated_vm_deploy_time_s: a VM not joined by then is a failed boot",
        f"max_parallel_boots = {max(1, max_vms)}",
        "# waiting_jobs_threshold "
        f"({e['waiting_jobs_threshold']}) and waiting_jobs_time_s ({e['waiting_jobs_time_s']} s): no equivalent;",
        "#   marea boots as soon as queued work does not fit the capacity present or booting.",
        f"# n_jobs_per_vm ({n_jobs_per_vm}): changes meaning. marea sizes by the cores and memory jobs ask for;",
        "#   the flavour below assumes one-core jobs, so it gets n_jobs_per_vm cores. Set the flavour's real",
        "#   cores and memory (MiB) from your cloud: they decide how many jobs fit on a worker.",
        "",
        "[[flavours]]",
        f"name = {_toml_str(ec2['flavour'] or 'default')}  # [ec2] flavour",
        f"cores = {max(1, n_jobs_per_vm)}",
        f"memory_mb = {max(1, n_jobs_per_vm) * 2000}  # a guess (2000 MiB per core): set the flavour's RAM",
        "",
        "[cloud]",
        "# elastiq spoke EC2; OpenStack retired its EC2 API. To move to the native API, set",
        '# driver = "openstack" with a [cloud.openstack] section (clouds.yaml cloud name, image, network).',
        'driver = "ec2"',
        "",
        "[cloud.ec2]",
        f"endpoint_url = {_toml_str(ec2['api_url'])}  # [ec2] api_url",
        f"image_id = {_toml_str(ec2['image_id'])}",
        f"key_name = {_toml_str(ec2['key_name'])}",
        f"aws_access_key_id = {_toml_str(ec2['aws_access_key_id'])}",
        f"aws_secret_access_key = {_toml_str(ec2['aws_secret_access_key'])}  # secret: protect this file",
    ]
    if ec2["api_version"]:
        out.append(f"# api_version ({ec2['api_version']}): no equivalent, boto3 negotiates the API version.")
    out += [
        "",
        "[batch]",
        f'system = "{plugin}"  # [elastiq] batch_plugin',
    ]
    if plugin == "htcondor":
        out += [
            "# elastiq booted for every idle job; marea boots only for jobs a new worker could run, judging",
            "# their Requirements against each flavour. Jobs that need the submit side's filesystem ask for",
            "# TARGET.FileSystemDomain / UidDomain: say what your workers advertise, or they are unsatisfiable:",
            "# [batch.htcondor.machine_attributes]",
            "# FileSystemDomain = '\"example.org\"'",
            "# UidDomain = '\"example.org\"'",
        ]
    out += [
        "",
        "[worker]",
        "# [ec2] user_data_b64, decoded. elastiq replaced %ipv4%, %ipv6%, %fqdn% in it ([substitute]);",
        "# marea fills ${MAREA_*} placeholders instead (see docs): check the text below.",
        f"user_data = {_toml_str(user_data)}",
    ]
    subst = {k: val for k, val in v["substitute"].items() if val}
    if subst:
        out.append("[worker.variables]  # from [substitute]: available as ${MAREA_VAR_<NAME>}")
        out += [f"{k} = {_toml_str(val)}" for k, val in subst.items()]
    dbg = v["debug"]
    if any(dbg.get(k, "0") not in ("", "0") for k in ELASTIQ_KEYS["debug"]):
        out.append("# [debug] dry_run_*: no equivalent; try `marea simulate` to see decisions without a cloud.")
    if e.get("log_level", "0") != "0":
        out.append(f"# log_level ({e['log_level']}): use `marea run --verbose` instead.")
    return "\n".join(out) + "\n"
