"""marea.toml: the typed configuration, validated with pydantic, with errors that name file, key and problem.

One file describes one elastic cluster: its identity, the policy knobs, the flavours it may boot, the cloud
driver, the batch system and the worker user-data. Unknown keys are errors (a typo must not silently fall back
to a default), and secrets are `SecretStr`, so they never print in a repr, a log line or an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from marea.model import Flavour, PolicySettings
from marea.profiles.registry import SYSTEMS, unavailable

if TYPE_CHECKING:
    BatchSystemName = str
else:  # the registered profiles: pydantic's error and the configuration reference list them
    BatchSystemName = Literal[SYSTEMS]


class ConfigError(Exception):
    """A configuration problem, already phrased as one line for the user: `FILE: key: what is wrong`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveSeconds = Annotated[float, Field(gt=0)]


class ClusterSection(_Strict):
    name: str = Field(default="marea", pattern=r"^[a-z][a-z0-9-]{0,30}$", description="cluster id, in tags")
    #: SQLite file path, or an SQLAlchemy URL (sqlite:///..., postgresql://...)
    state: str = "marea-state.db"


class EngineSection(_Strict):
    #: seconds between two reconcile cycles (each reads the batch system and the cloud once)
    interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: a joined worker missing from the batch system this long is failed and deleted (a restarted controller
    #: or collector forgets its workers for a while: keep it above their re-registration time)
    absent_grace_s: PositiveSeconds = 120.0
    #: between two cycles, ask the batch system this often for the ids of its queued jobs (one light call: Slurm
    #: `squeue --states=PENDING --format=%i`, HTCondor an id-only query of the idle jobs, Kubernetes a LIST of
    #: the unbound pending pods); a new one starts the next cycle at once. 0: off
    watch_interval_s: Annotated[float, Field(ge=0, le=300)] = 1.0
    #: where `marea run` writes its log lines (stderr when empty)
    log_file: str = ""


class PolicySection(_Strict):
    #: workers kept even when idle (booted at start when fewer exist)
    min_workers: Annotated[int, Field(ge=0)] = 0
    #: workers never exceeded, booting ones included (the project quota may stop marea earlier)
    max_workers: Annotated[int, Field(ge=0)] = 10
    #: workers booting at the same time, at most: the bound of the adaptive limit, which starts at
    #: initial_parallel_boots, doubles once a cycle's creates (at least half of it) are all confirmed by the
    #: cloud (listed ACTIVE, or joined) and halves after a failed boot (an error, a 429, a quota answer, ERROR)
    max_parallel_boots: Annotated[int, Field(ge=1)] = 200
    #: where the adaptive parallel-boot limit starts (it is kept in the state database across restarts)
    initial_parallel_boots: Annotated[int, Field(ge=1)] = 10
    #: a worker idle this long is drained, then deleted (never below min_workers). 0 (the default): at the first
    #: cycle that sees it idle with no queued work for it; keeping idle VMs in case work comes back cost more
    #: idle time than the boots it saved on every trace measured (docs/engine.md), with boot_patience_s and
    #: cancel_surplus_boots absorbing the churn. A cloud where a boot costs more than its boot time (image
    #: transfers, a charge per VM) is better served by a few minutes
    idle_threshold_s: Annotated[float, Field(ge=0)] = 0.0
    #: a worker that has not joined the batch system this long after its creation is deleted and counted as a
    #: failed boot
    join_timeout_s: PositiveSeconds = 600.0
    #: after consecutive failed boots, boots pause for backoff_base_s x 2^(failures - 1) ...
    backoff_base_s: Annotated[float, Field(ge=0)] = 30.0
    #: ... at most this long
    backoff_max_s: Annotated[float, Field(ge=0)] = 1800.0
    #: the flavour booted to reach min_workers (default: the first flavour)
    min_flavour: str | None = None
    #: with no job queued, drain partly used busy workers whose jobs would fit in a busier worker's free room,
    #: least loaded first: each is deleted when its last job ends (nothing is killed), or taken back if new work
    #: needs it. Off by default: on the KTH-SP2 trace it cost idle VM-hours (docs/engine.md)
    consolidate: bool = False
    #: keep a small warm capacity: about the work newly queued over one boot time (the arrival rate over
    #: headroom_window_s x headroom_boot_s), in whole workers of the first flavour. Off by default: it costs idle
    #: VM-hours; docs/simulator.md measures them against the wait it saves
    headroom: bool = False
    #: the most workers headroom keeps warm (idle, or booting for no queued work); never above max_workers
    headroom_max_workers: Annotated[int, Field(ge=0)] = 2
    #: the window over which headroom measures the arrival rate of queued work
    headroom_window_s: PositiveSeconds = 1800.0
    #: the boot time headroom covers: a worker's time from the cloud's create call to joining the batch system
    headroom_boot_s: Annotated[float, Field(ge=0)] = 300.0
    #: a drain still running after this long is reported in the decisions; the worker stays draining and its
    #: jobs are never killed
    drain_timeout_s: PositiveSeconds = 86400.0
    #: queued work waits this long (from its oldest job) for room to free on the busy workers before a VM is
    #: booted for it, only while some busy worker could hold it; 0 boots at once. Most jobs arriving at a busy
    #: cluster start on a slot a finishing job frees: a VM booted for each would arrive to find its job gone
    boot_patience_s: Annotated[float, Field(ge=0)] = 300.0
    #: delete a VM still booting (not yet seen by the batch system) once no queued work needs it, youngest
    #: first and never below min_workers, instead of letting it join and idle (not counted as a failed boot)
    cancel_surplus_boots: bool = True

    @model_validator(mode="after")
    def _min_not_above_max(self) -> PolicySection:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) is greater than max_workers ({self.max_workers})")
        return self


class FlavourSection(_Strict):
    #: the cloud's flavour name; flavours are tried in the order of the file
    name: str = Field(min_length=1)
    #: cores of a VM of this flavour, as the batch system will see them
    cores: Annotated[int, Field(ge=1)]
    #: memory of a VM of this flavour in MiB, as the batch system will see it
    memory_mb: Annotated[int, Field(ge=1)]
    #: GPUs of a VM of this flavour
    gpus: Annotated[int, Field(ge=0)] = 0


class LocalCloudSection(_Strict):
    """The embedded `local` driver: a VM is a process tree running the user-data in its own directory."""

    #: directory holding one sub-directory per local "VM"
    base_dir: str = "marea-vms"
    #: run each VM in its own network namespace (root only), plugged into `bridge` inside `bridge_netns`
    netns: bool = False
    #: network namespace holding the bridge (netns mode)
    bridge_netns: str = ""
    #: bridge the VMs' interfaces are plugged into (netns mode)
    bridge: str = "br0"
    #: subnet the VMs' addresses are taken from (netns mode)
    subnet: str = "10.231.0.0/24"
    #: first host number handed out in `subnet` (addresses below are the infrastructure's)
    first_host: Annotated[int, Field(ge=2)] = 100


class OpenStackCloudSection(_Strict):
    """The native OpenStack driver (openstacksdk): a cloud from clouds.yaml, or explicit settings."""

    #: name of a cloud in clouds.yaml (OS_CLIENT_CONFIG_FILE, ~/.config/openstack); empty: the settings below
    cloud: str = ""
    #: Keystone URL, when no `cloud` is named
    auth_url: str = ""
    #: password, application credential (recommended for a service) or OIDC access token; empty: from clouds.yaml
    auth_type: Literal["password", "v3applicationcredential", "v3oidcaccesstoken", ""] = ""
    #: user name (auth_type password)
    username: str = ""
    #: password (auth_type password)
    password: SecretStr | None = None
    #: the project (tenant) the VMs are made in
    project_name: str = ""
    #: Keystone domain of the user
    user_domain_name: str = "Default"
    #: Keystone domain of the project
    project_domain_name: str = "Default"
    #: application credential id (auth_type v3applicationcredential)
    application_credential_id: str = ""
    #: application credential secret (auth_type v3applicationcredential)
    application_credential_secret: SecretStr | None = None
    #: Keystone identity provider (auth_type v3oidcaccesstoken)
    identity_provider: str = ""
    #: Keystone federation protocol (auth_type v3oidcaccesstoken)
    protocol: str = "openid"
    #: OIDC access token (auth_type v3oidcaccesstoken)
    access_token: SecretStr | None = None
    #: region (empty: the cloud's only or default one)
    region_name: str = ""
    #: image of the workers (name or id); any image that runs cloud-init
    image: str = ""
    #: network the workers are attached to (name or id); no floating IP is given to workers
    network: str = ""
    #: security groups of the workers
    security_groups: list[str] = []
    #: keypair injected into the workers (empty: none)
    key_name: str = ""
    #: a server not ACTIVE this long after its creation is counted as a failed boot
    boot_timeout_s: PositiveSeconds = 600.0
    #: creates sent to Nova at the same time (a scale-up of tens of workers should not be serial)
    parallel_creates: Annotated[int, Field(ge=1, le=64)] = 10


class Ec2CloudSection(_Strict):
    """EC2-compatible clouds (boto3): for migration from elastiq and for clouds that only speak EC2."""

    #: the EC2 API URL (elastiq's [ec2] api_url); empty: AWS
    endpoint_url: str = ""
    #: region
    region_name: str = "us-east-1"
    #: access key (elastiq's [ec2] aws_access_key_id)
    aws_access_key_id: str = ""
    #: secret key (elastiq's [ec2] aws_secret_access_key)
    aws_secret_access_key: SecretStr | None = None
    #: image of the workers (elastiq's [ec2] image_id)
    image_id: str = ""
    #: keypair injected into the workers (empty: none)
    key_name: str = ""
    #: security groups of the workers
    security_groups: list[str] = []
    #: subnet of the workers (empty: the default one)
    subnet_id: str = ""


class CloudSection(_Strict):
    #: the cloud the worker VMs are made in: `openstack` (Nova), `ec2` (EC2-compatible API) or `local` (processes
    #: on this machine: tests and demos)
    driver: Literal["local", "openstack", "ec2"] = "local"
    local: LocalCloudSection = LocalCloudSection()
    openstack: OpenStackCloudSection = OpenStackCloudSection()
    ec2: Ec2CloudSection = Ec2CloudSection()


class WorkerSection(_Strict):
    """The worker template. User-data is a script or a #cloud-config; ${MAREA_*} placeholders are filled in."""

    #: the workers' user-data, inline
    user_data: str = ""
    #: the workers' user-data, from this file
    user_data_file: str = ""
    #: extra placeholders for the user-data, available as ${MAREA_VAR_<NAME>}
    variables: dict[str, str] = {}

    @model_validator(mode="after")
    def _one_source(self) -> WorkerSection:
        if self.user_data and self.user_data_file:
            raise ValueError("set either user_data or user_data_file, not both")
        return self


class SlurmSection(_Strict):
    #: partition whose pending jobs are demand and in which workers join (Nodeset by feature)
    partition: str = "marea"
    #: the node feature the dynamic workers register with (the partition's Nodeset selects it)
    feature: str = "marea"
    #: prefix for every Slurm client command (e.g. ["nsenter", "--net=/run/netns/x"]); empty on a real master
    command_prefix: list[str] = []
    #: SLURM_CONF for the clients (empty: Slurm's default)
    slurm_conf: str = ""
    #: a Slurm client command still running after this long is killed and the cycle retried
    command_timeout_s: PositiveSeconds = 30.0


class HTCondorSection(_Strict):
    """The `htcondor` batch plugin (PyPI `htcondor` bindings: htcondor2 / classad2)."""

    #: collector address (host[:port]) for marea and the workers; empty: COLLECTOR_HOST of the HTCondor config
    collector: str = ""
    #: the schedd whose idle jobs are demand (its Name); empty: every schedd the collector knows
    schedd: str = ""
    #: constraint added to the schedd query (which idle jobs are demand)
    job_constraint: str = "true"
    #: CONDOR_CONFIG for the bindings (empty: the environment's or HTCondor's default)
    condor_config: str = ""
    #: network namespace to make the bindings' calls from (a test pool in a namespace); empty on a real master
    netns: str = ""
    #: file with the IDTOKEN workers join with (user-data placeholder ${MAREA_CONDOR_IDTOKEN}; never logged);
    #: one token for every worker, for ever: prefer token_command
    token_file: str = ""
    #: command that prints a new IDTOKEN (e.g. condor_token_create -identity condor@DOMAIN -key POOL -authz
    #: ADVERTISE_STARTD -authz ADVERTISE_MASTER -authz READ): each worker gets its own, revoked when marea removes
    #: the worker; needs revocation_file. Takes precedence over token_file
    token_command: list[str] = []
    #: file the central manager's configuration includes, where marea revokes removed workers' tokens
    revocation_file: str = ""
    #: issued and revoked token ids (JSON, 0600)
    token_registry: str = "/var/lib/marea/htcondor-tokens.json"
    #: makes the central manager's daemons read the revocation file again
    reconfig_command: list[str] = ["condor_reconfig"]
    #: ClassAd expressions describing a new worker, for evaluating jobs' Requirements (e.g. FileSystemDomain)
    machine_attributes: dict[str, str] = {}
    #: scratch disk of a worker, for RequestDisk and TARGET.Disk in Requirements
    worker_disk_gb: Annotated[float, Field(gt=0)] = 100.0
    #: a startd silent this long is lost (its ads outlive it by CLASSAD_LIFETIME); keep > UPDATE_INTERVAL (300 s)
    lost_after_s: PositiveSeconds = 600.0

    @model_validator(mode="after")
    def _tokens_are_revocable(self) -> HTCondorSection:
        if self.token_command and not self.revocation_file:
            raise ValueError("token_command needs revocation_file: a worker's token must be revocable")
        return self


#: a Kubernetes taint as kubeadm/kubectl write it: key[=value]:Effect
_TAINT = r"^[A-Za-z0-9][-A-Za-z0-9_./]*(=[-A-Za-z0-9_.]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$"


class KubernetesSection(_Strict):
    """The `kubernetes` batch plugin (the official `kubernetes` client): Nodes are workers, Unschedulable pods
    are demand; workers join with a short-lived kubeadm bootstrap token marea creates through the API."""

    #: kubeconfig of an identity that may list pods, manage nodes, evict pods and create bootstrap-token Secrets
    #: (empty: in-cluster configuration, else ~/.kube/config)
    kubeconfig: str = ""
    #: context of the kubeconfig (empty: its current context)
    context: str = ""
    #: lifetime of the bootstrap token a new worker joins with (kubeadm's default is 24 h; keep it near a boot)
    bootstrap_token_ttl_s: Annotated[float, Field(ge=60, le=86400)] = 1800.0
    #: API endpoint (host:port) workers join through; empty: the kubeconfig's server
    join_endpoint: str = ""
    #: namespaces whose pending pods are not demand
    ignored_namespaces: list[str] = []
    #: an Eviction refused by a PodDisruptionBudget (429) is retried next cycle; a drain still blocked this long is
    #: reported in the decisions (it is never forced)
    drain_report_after_s: PositiveSeconds = 600.0
    #: a Node NotReady (or silent) this long is lost
    lost_after_s: PositiveSeconds = 300.0
    #: a Kubernetes API call still running after this long fails and the cycle is retried
    request_timeout_s: PositiveSeconds = 30.0
    #: taints the workers of a flavour register with ("key=value:NoSchedule"; the worker template must pass them
    #: to kubeadm join): only pods tolerating them are demand for that flavour. Flavours not listed: no taints
    flavour_taints: dict[str, list[Annotated[str, Field(pattern=_TAINT)]]] = {}
    #: labels every worker carries besides marea's and the instance type (set by the kubelet or the template): a
    #: pod's nodeSelector or required node affinity may ask for them; any other label fits no new worker
    worker_labels: dict[str, str] = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    #: memory (MiB) a worker's kubelet keeps from its pods (system and kube reserves, eviction threshold, kernel):
    #: a pod needing more than a flavour's memory less this fits no worker of that flavour
    reserved_memory_mb: Annotated[float, Field(ge=0)] = 400.0
    #: cores a worker's kubelet keeps from its pods, likewise
    reserved_cores: Annotated[float, Field(ge=0)] = 0.0


class BatchSection(_Strict):
    #: the batch system whose queue is demand and whose workers marea manages (the registered profiles)
    system: BatchSystemName = "slurm"
    slurm: SlurmSection = SlurmSection()
    htcondor: HTCondorSection = HTCondorSection()
    kubernetes: KubernetesSection = KubernetesSection()


class ElastiqBaselineSection(_Strict):
    """The elastiq baseline of `marea simulate`: elastiq.conf's [elastiq] keys (min/max from [policy])."""

    #: elastiq's check_queue_every_s
    check_queue_every_s: PositiveSeconds = 240.0
    #: elastiq's check_vms_every_s
    check_vms_every_s: PositiveSeconds = 300.0
    #: elastiq's waiting_jobs_threshold
    waiting_jobs_threshold: Annotated[int, Field(ge=0)] = 0
    #: elastiq's waiting_jobs_time_s
    waiting_jobs_time_s: Annotated[float, Field(ge=0)] = 600.0
    #: elastiq's n_jobs_per_vm
    n_jobs_per_vm: Annotated[int, Field(ge=1)] = 4
    #: elastiq's idle_for_time_s
    idle_for_time_s: Annotated[float, Field(ge=0)] = 600.0
    #: elastiq's estimated_vm_deploy_time_s
    estimated_vm_deploy_time_s: PositiveSeconds = 420.0


class SimulateSection(_Strict):
    """Simulator-only knobs (`marea simulate`): the simulated cloud, the trace units, the baselines."""

    #: VM boot time: uniform in boot_time_s +- boot_time_jitter_s (CloudVeneto's elastiq.conf: 420 s)
    boot_time_s: Annotated[float, Field(ge=0)] = 420.0
    #: half-width of the uniform spread of boot times around boot_time_s
    boot_time_jitter_s: Annotated[float, Field(ge=0)] = 0.0
    #: probability that a boot fails (the VM never joins)
    boot_failure_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: simulated project quota of instances (none: unlimited)
    quota_instances: Annotated[int, Field(ge=0)] | None = None
    #: simulated project quota of cores (none: unlimited)
    quota_cores: Annotated[int, Field(ge=0)] | None = None
    #: random seed of the simulated cloud (boot times, failures): equal seeds give equal runs
    seed: int = 0
    #: job memory from an SWF trace: none (cores only), requested (field 10) or used (field 7)
    swf_memory: Literal["none", "requested", "used"] = "none"
    #: replay SWF jobs with run time <= 0 (cancelled/failed) as zero-length jobs instead of dropping them
    keep_failed_jobs: bool = False
    #: size of the `static` baseline (default: policy.max_workers)
    static_workers: Annotated[int, Field(ge=0)] | None = None
    #: stop this long after the last submission; jobs still queued are "never started"
    horizon_s: PositiveSeconds = 7 * 86400.0
    #: sampling period of the workers-over-time plot
    sample_every_s: PositiveSeconds = 600.0
    #: VM-seconds every boot costs beyond the VM's own lifetime, failed and short boots included (the cloud's
    #: work to place and image it, billing granularity): shorter idle thresholds mean more boots, not free ones
    boot_price_vm_s: Annotated[float, Field(ge=0)] = 0.0
    #: how the batch system places a job on the workers it fits: pack (the oldest first: Slurm's default),
    #: spread (the least loaded: HTCondor's and Kubernetes' default), auto (from batch.system)
    placement: Literal["auto", "pack", "spread"] = "auto"
    elastiq: ElastiqBaselineSection = ElastiqBaselineSection()

    @model_validator(mode="after")
    def _jitter_below_mean(self) -> SimulateSection:
        if self.boot_time_jitter_s > self.boot_time_s:
            raise ValueError("boot_time_jitter_s must not exceed boot_time_s (boot times would be negative)")
        return self


class OffloadKubernetesSection(_Strict):
    """The `kubernetes` offload backend: pods go to a remote cluster reached through a kubeconfig."""

    #: kubeconfig of the remote cluster
    kubeconfig: str = ""
    #: context of the kubeconfig (empty: its current-context)
    context: str = ""
    #: remote namespace = prefix + the pod's namespace, except for the namespaces listed in `unprefixed`
    namespace_prefix: str = "offload-"
    #: pod namespaces kept as they are on the remote cluster (no prefix)
    unprefixed: list[str] = []
    #: namespaces whose pods are refused (never created remotely)
    refused_namespaces: list[str] = ["kube-system", "kube-public", "kube-node-lease"]
    #: merged into every pod (the pod's own keys win for nodeSelector; tolerations are added)
    node_selector: dict[str, str] = {}
    #: tolerations added to every pod (e.g. for the tainted nodes of the remote cluster)
    tolerations: list[dict[str, str]] = []
    #: the pod's serviceAccountName names an account of the *central* cluster: drop it by default
    service_account: Literal["drop", "keep"] = "drop"
    #: timeout of one request to the remote API server
    timeout_s: PositiveSeconds = 30.0


PODMAN_COMMAND = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
PODMAN_RUN_OPTIONS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


class OffloadSecuritySection(_Strict):
    """What a pod may ask for beyond the defaults (docs/security.md). Everything is refused unless allowed here."""

    #: securityContext.privileged: true
    allow_privileged: bool = False
    #: securityContext.capabilities.add: only these (names without CAP_, e.g. "NET_BIND_SERVICE"; "ALL" = any)
    allowed_capabilities: list[Annotated[str, Field(pattern=r"^[A-Z_]{1,40}$")]] = []
    #: hostNetwork: true (the pod shares the host's network; also what `network = "host"` would give every pod)
    allow_host_network: bool = False
    #: hostPID: true (the pod sees and may signal the host's processes)
    allow_host_pid: bool = False
    #: hostIPC: true (the pod shares the host's IPC namespace)
    allow_host_ipc: bool = False
    #: hostPath volumes: only paths under these absolute directories
    allowed_host_paths: list[Annotated[str, Field(pattern=r"^/[^:,\x00]*$")]] = []
    #: seccompProfile / appArmorProfile `Unconfined`, procMount `Unmasked`
    allow_unconfined: bool = False
    #: containers may run as uid 0 (in the container): Kubernetes' default, and most images' user; when false,
    #: runAsUser 0 is refused and every container must run as non-root, as if it had runAsNonRoot
    allow_run_as_root: bool = True


class OffloadSection(_Strict):
    """`marea offload serve`: the interLink plugin server."""

    #: where pods run: `local` (podman on this host), `slurm` or `htcondor` (one job per pod), `kubernetes` (a
    #: remote cluster)
    backend: Literal["local", "slurm", "htcondor", "kubernetes"] = "local"
    #: unix socket path (default transport, mode 0600); ignored when `port` is set
    socket: str = "marea-offload.sock"
    #: TCP address to bind when `port` is set
    host: str = "127.0.0.1"
    #: serve TCP on this port (0: the unix socket)
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    #: bearer token required on TCP (or env MAREA_OFFLOAD_TOKEN)
    token: SecretStr | None = None
    #: pod directories and the pod store (offload.db)
    state_dir: str = "marea-offload"
    #: seconds between two bulk status queries of the backend (answers to /status come from that cache)
    refresh_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    #: the podman command line (runtime flags that work in restricted hosts)
    podman: list[str] = PODMAN_COMMAND
    #: options of every `podman create` (the network is `network`, not an option here)
    run_options: list[str] = PODMAN_RUN_OPTIONS
    #: the pod's network (local, slurm, htcondor): "none" = its own network namespace with loopback only,
    #: shared by its containers; "default" = its own namespace on podman's default network (root: the
    #: `podman` bridge with NAT; rootless: slirp4netns); "host" = the host's network (no isolation)
    network: Literal["none", "default", "host"] = "none"
    #: what a pod may ask of the host through its securityContext and volumes (everything denied by default)
    security: OffloadSecuritySection = OffloadSecuritySection()
    #: seconds a container gets between SIGTERM and SIGKILL when its pod is deleted
    grace_s: Annotated[int, Field(ge=0, le=300)] = 5
    #: pods the virtual node accepts (the ping's `pods`)
    max_pods: Annotated[int, Field(ge=1)] = 110
    #: python3 on the nodes that runs the pod runner (default: the server's interpreter; `python3` for htcondor)
    python: str = ""
    kubernetes: OffloadKubernetesSection = OffloadKubernetesSection()

    @model_validator(mode="after")
    def _network_is_one_key(self) -> OffloadSection:
        for opt in self.run_options:
            if opt.split("=", 1)[0] in ("--network", "--net"):
                raise ValueError("run_options: the network is chosen by offload.network, not by a podman option")
        return self


class WebSection(_Strict):
    """The engine's web endpoint (served by `marea run`): /metrics for Prometheus, /api/status, the live page."""

    #: `host:port` (TCP; `[::1]:9180` for IPv6), `unix:/path` (a socket file, for a reverse proxy), or empty
    #: for no endpoint. Anyone who reaches it reads the cluster's status: keep it on localhost or a socket
    listen: str = Field(
        default="127.0.0.1:9180", pattern=r"^$|^unix:/[^\x00]+$|^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
    )


class MareaConfig(_Strict):
    cluster: ClusterSection = ClusterSection()
    engine: EngineSection = EngineSection()
    policy: PolicySection = PolicySection()
    flavours: list[FlavourSection] = Field(
        default_factory=lambda: [FlavourSection(name="small", cores=2, memory_mb=2000)], min_length=1
    )
    cloud: CloudSection = CloudSection()
    worker: WorkerSection = WorkerSection()
    batch: BatchSection = BatchSection()
    simulate: SimulateSection = SimulateSection()
    offload: OffloadSection = OffloadSection()
    web: WebSection = WebSection()
    #: where this configuration came from; relative paths in it are relative to this directory
    source_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _flavours_consistent(self) -> MareaConfig:
        names = [f.name for f in self.flavours]
        if len(set(names)) != len(names):
            raise ValueError(f"flavour names must be unique, got {names}")
        if self.policy.min_flavour is not None and self.policy.min_flavour not in names:
            raise ValueError(f"policy.min_flavour {self.policy.min_flavour!r} is not one of the flavours {names}")
        return self

    def path(self, value: str) -> Path:
        """A path from the config, resolved against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.source_dir) / p

    def state_url(self) -> str:
        s = self.cluster.state
        if s.startswith(("postgresql://", "postgres://")):
            # SQLAlchemy would pick psycopg2; marea ships with psycopg 3 (extra "postgres")
            return "postgresql+psycopg://" + s.split("://", 1)[1]
        if "://" in s:
            return s
        return f"sqlite:///{self.path(s).resolve()}"

    def policy_settings(self) -> PolicySettings:
        p = self.policy
        return PolicySettings(
            flavours=tuple(Flavour(f.name, f.cores, f.memory_mb, f.gpus) for f in self.flavours),
            min_workers=p.min_workers,
            max_workers=p.max_workers,
            max_parallel_boots=p.max_parallel_boots,
            initial_parallel_boots=p.initial_parallel_boots,
            consolidate=p.consolidate,
            boot_patience_s=p.boot_patience_s,
            cancel_surplus_boots=p.cancel_surplus_boots,
            headroom=p.headroom,
            headroom_max_workers=p.headroom_max_workers,
            headroom_window_s=p.headroom_window_s,
            headroom_boot_s=p.headroom_boot_s,
            drain_timeout_s=p.drain_timeout_s,
            idle_threshold_s=p.idle_threshold_s,
            join_timeout_s=p.join_timeout_s,
            backoff_base_s=p.backoff_base_s,
            backoff_max_s=p.backoff_max_s,
            min_flavour=p.min_flavour,
        )

    def user_data_template(self) -> str:
        if self.worker.user_data_file:
            return self.path(self.worker.user_data_file).read_text()
        return self.worker.user_data


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"{loc}: {msg}"


def unsupported_batch(system: str) -> str:
    """Why this build cannot drive `system` ('' when it can). A registered system whose driver is missing is
    refused when the file is read, so that `config check` says so and `cluster create` makes nothing, instead
    of a master booting an engine that refuses to start."""
    return unavailable(system)


def parse_config(data: dict[str, Any], source: str = "<config>", source_dir: str = ".") -> MareaConfig:
    """Validate a parsed TOML document; raise ConfigError naming the source, the key and the problem."""
    try:
        cfg = MareaConfig.model_validate({**data, "source_dir": source_dir})
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {first}{more}") from None
    unsupported = unsupported_batch(cfg.batch.system)
    if unsupported:
        raise ConfigError(f"{source}: batch.system: {cfg.batch.system!r} is not supported yet: {unsupported}")
    return cfg


def load_config(path: str | Path) -> MareaConfig:
    """Read and validate a marea.toml file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, str(p), str(p.resolve().parent))
