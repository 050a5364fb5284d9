"""Site configurations: validated descriptions of where tasks run, turned into ``parsl.Config``.

Every site maps the three resource classes of a campaign to Parsl executor labels:
``dft`` (DFT labelling, CPU nodes), ``gpu`` (training, sampling) and ``cpu`` (light steps).

Site kinds (one YAML per kind in ``site_configs/``, documented in docs/hpc.md):

``local-threads``     ThreadPoolExecutor per class, in the driver process.
``local-htex``        HighThroughputExecutor per class on this machine (LocalProvider), bound to
                      the loopback interface, encrypted.
``slurm``             per class an HTEX (one worker pool per node, ``srun``-launched) or an
                      MPIExecutor (MPI tasks launched with ``$PARSL_MPI_PREFIX`` = ``srun ...``) on
                      a SlurmProvider that submits blocks with sbatch.
``slurm-allocation``  the campaign runs inside one sbatch allocation; worker pools are started on
                      its nodes with ``srun`` job steps (no nested job submission).
``globus-compute``    classes with an endpoint id run on a remote Globus Compute endpoint through
                      Parsl's GlobusComputeExecutor; the others on local threads.

Entry points: :func:`load_site` (name or path -> ``parsl.Config``), :func:`load_site_model`
(validated model), :func:`build_config`, :func:`mpi_resource_spec`, :func:`parsl_session`.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import logging
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from parsl.config import Config
from parsl.executors import ThreadPoolExecutor
from parsl.launchers import SrunLauncher
from pydantic import AfterValidator, Field, ValidationError, model_validator

from alflow.config import StrictModel, read_yaml, validate_model
from alflow.errors import ConfigError

log = logging.getLogger(__name__)

RESOURCE_CLASSES = ("cpu", "dft", "gpu")
SITE_KINDS = ("local-threads", "local-htex", "slurm", "slurm-allocation", "globus-compute")
ResourceClass = Literal["cpu", "dft", "gpu"]
Walltime = Annotated[str, Field(pattern=r"^(\d+-)?\d{1,4}:\d{2}:\d{2}$")]
WILDCARDS = frozenset({"0.0.0.0", "::", "*", "0", "[::]"})


def _one_interface(address: str | None) -> str | None:
    if address is not None and address.strip() in WILDCARDS | {""}:
        raise ValueError(f"{address!r} binds every interface; high-throughput executors bind "
                         "to one: name an address of this machine or set `interface`")
    return address


BindAddress = Annotated[str, AfterValidator(_one_interface)]


# ----------------------------------------------------------------------------- models
class SiteBase(StrictModel):
    """Options every site kind has."""

    kind: str
    retries: int = Field(0, ge=0, description="times Parsl retries a failed task")
    strategy_period: float = Field(5.0, gt=0, description="s between block scaling decisions")
    max_idletime: float = Field(120.0, ge=0, description="s an idle block lives before scale-in")


class ThreadsClass(StrictModel):
    max_threads: int = Field(2, ge=1)


class LocalThreadsSite(SiteBase):
    kind: Literal["local-threads"] = "local-threads"
    classes: dict[ResourceClass, ThreadsClass] = Field(
        default_factory=lambda: {c: ThreadsClass() for c in RESOURCE_CLASSES})


class WorkerOptions(StrictModel):
    """How one resource class runs its tasks inside a block."""

    executor: Literal["htex", "mpi"] = Field(
        "htex", description="htex: one task per worker; mpi: MPIExecutor, tasks call srun")
    cores_per_worker: float = Field(1.0, gt=0, description="cores each worker (task) holds")
    max_workers_per_node: int | None = Field(None, ge=1, description="cap on workers per node")
    available_accelerators: int | list[str] = Field(
        0, description="GPUs pinned one per worker (count, or device ids); 0 = no pinning")
    cpu_affinity: str = Field(
        "none", pattern=r"^(none|block|alternating|block-reverse|list:.+)$",
        description="Parsl's worker pinning: none, block, alternating, block-reverse, list:...")
    # mpi executor only
    mpi_launcher: Literal["srun", "mpiexec"] = "srun"
    max_workers_per_block: int = Field(1, ge=1, description="MPI tasks at once per block")
    ranks_per_node: int = Field(2, ge=1, description="MPI ranks per node of one MPI task")
    nodes_per_task: int = Field(1, ge=1, description="nodes of one MPI task")
    launcher_options: str = Field("", description="extra options for srun/mpiexec of MPI tasks")

    @model_validator(mode="after")
    def _check(self) -> WorkerOptions:
        if isinstance(self.available_accelerators, int) and self.available_accelerators < 0:
            raise ValueError("available_accelerators must be >= 0 or a list of device ids")
        if self.executor == "mpi" and self.available_accelerators:
            raise ValueError("available_accelerators applies to executor 'htex' only")
        return self


class LocalHtexClass(WorkerOptions):
    executor: Literal["htex"] = "htex"
    max_workers_per_node: int | None = Field(None, ge=1)


def _default_local_classes() -> dict[str, LocalHtexClass]:
    return {c: LocalHtexClass(max_workers_per_node=1) for c in RESOURCE_CLASSES}


class LocalHtexSite(SiteBase):
    kind: Literal["local-htex"] = "local-htex"
    address: BindAddress = Field("127.0.0.1", description="interface the interchange binds to")
    worker_init: str = ""
    activate_env: bool = True
    classes: dict[ResourceClass, LocalHtexClass] = Field(default_factory=_default_local_classes)


class SlurmOptions(StrictModel):
    """SlurmProvider options (one block = one sbatch job)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    clusters: str | None = None
    walltime: Walltime = "01:00:00"
    nodes_per_block: int = Field(1, ge=1)
    cores_per_node: int | None = Field(None, ge=1, description="--cpus-per-task of the block")
    mem_per_node: int | None = Field(None, ge=1, description="GB per node")
    gpus_per_node: int | None = Field(None, ge=1, description="--gpus-per-node of the block")
    gres: str | None = Field(None, description="--gres of the block, e.g. gpu:4")
    exclusive: bool = Field(True, description="whole nodes; False lets blocks share a node")
    init_blocks: int = Field(0, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    parallelism: float = Field(1.0, ge=0, le=1)
    scheduler_options: str = Field("", description="extra '#SBATCH ...' lines")
    worker_init: str = Field("", description="shell lines run before the workers (modules...)")
    srun_options: str = Field("", description="extra options of the srun starting the pools")
    cmd_timeout: int = Field(60, ge=1, description="s allowed for sbatch/squeue/scancel")

    @model_validator(mode="after")
    def _blocks(self) -> SlurmOptions:
        if self.min_blocks > self.max_blocks or self.init_blocks > self.max_blocks:
            raise ValueError("need init_blocks <= max_blocks and min_blocks <= max_blocks")
        return self


class SlurmClass(WorkerOptions):
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two mappings (``over`` wins)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class _AddressMixin(StrictModel):
    address: BindAddress | None = Field(
        None, description="address workers connect to; null = this host's (by hostname)")
    interface: str | None = Field(None, description="network interface (e.g. ib0) instead")
    worker_init: str = ""
    activate_env: bool = Field(True, description="activate the driver's Python env in workers")


class SlurmSite(_AddressMixin, SiteBase):
    kind: Literal["slurm"] = "slurm"
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    classes: dict[ResourceClass, SlurmClass] = Field(
        default_factory=lambda: {c: SlurmClass() for c in RESOURCE_CLASSES})

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: Any) -> Any:
        # each class's `slurm:` is a partial override of the site-wide `slurm:`
        if not isinstance(data, dict):
            return data
        shared = data.get("slurm") or {}
        classes = data.get("classes")
        if classes is None:
            classes = {}
        if isinstance(classes, Mapping):  # classes not listed get the shared options too
            classes = {**{c: {} for c in RESOURCE_CLASSES}, **classes}
        if isinstance(shared, Mapping) and isinstance(classes, Mapping):
            try:  # a bad shared option is reported once, under `slurm.`, not once per class
                SlurmOptions.model_validate(shared)
            except ValidationError:
                shared = {}
            new = {}
            for name, spec in classes.items():
                spec = dict(spec or {}) if isinstance(spec, Mapping) else spec
                if isinstance(spec, dict):
                    own = spec.get("slurm") or {}
                    spec["slurm"] = _merge(shared, own) if isinstance(own, Mapping) else own
                new[name] = spec
            data = {**data, "classes": new}
        return data


class AllocationClass(WorkerOptions):
    nodes: int | None = Field(None, ge=1, description="nodes of the allocation used; null = all")
    first_node: int = Field(0, ge=0, description="index of the first node used (srun --relative)")


class SlurmAllocationSite(_AddressMixin, SiteBase):
    kind: Literal["slurm-allocation"] = "slurm-allocation"
    srun_options: str = Field("--overlap", description="options of the srun starting the pools")
    classes: dict[ResourceClass, AllocationClass] = Field(
        default_factory=lambda: {c: AllocationClass() for c in RESOURCE_CLASSES})


class GlobusClass(StrictModel):
    endpoint_id: UUID | None = Field(None, description="Globus Compute endpoint; null = local")
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    max_threads: int = Field(2, ge=1, description="local threads when endpoint_id is null")


class GlobusComputeSite(SiteBase):
    kind: Literal["globus-compute"] = "globus-compute"
    amqp_port: Literal[443, 5671, 5672] | None = None
    version_check: bool = Field(True, description="ask the service for version compatibility")
    classes: dict[ResourceClass, GlobusClass] = Field(
        default_factory=lambda: {c: GlobusClass() for c in RESOURCE_CLASSES})

    @model_validator(mode="after")
    def _one_endpoint(self) -> GlobusComputeSite:
        if not any(c.endpoint_id for c in self.classes.values()):
            raise ValueError("no class has an endpoint_id: set classes.dft.endpoint_id")
        return self


SITE_MODELS: dict[str, type[SiteBase]] = {
    "local-threads": LocalThreadsSite,
    "local-htex": LocalHtexSite,
    "slurm": SlurmSite,
    "slurm-allocation": SlurmAllocationSite,
    "globus-compute": GlobusComputeSite,
}
Site = LocalThreadsSite | LocalHtexSite | SlurmSite | SlurmAllocationSite | GlobusComputeSite


# ----------------------------------------------------------------------------- loading
def builtin_sites() -> dict[str, Path]:
    """Names and files of the site YAMLs shipped in ``site_configs/``."""
    try:
        root = resources.files("site_configs")
        files = {p.name: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}
    except (ModuleNotFoundError, TypeError):
        files = {}
    if not files:  # running from a source tree without the package on the path
        here = Path(__file__).resolve().parents[2] / "site_configs"
        files = {p.name: p for p in here.glob("*.yaml")}
    return {name.removesuffix(".yaml"): path for name, path in sorted(files.items())}


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"slurm.partition": "debug"}`` -> ``{"slurm": {"partition": "debug"}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            value = _dotted(value)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _merge(node.get(parts[-1], {}), value) if isinstance(value, dict) \
            and isinstance(node.get(parts[-1]), dict) else value
    return out


def validate_site(data: Any, source: str = "<site>") -> Site:
    """Validate a site mapping (with its ``kind``) as the matching model."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of site options, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in SITE_MODELS:
        raise ConfigError(f"{source}: kind: expected one of {', '.join(SITE_KINDS)} (got {kind!r})")
    return validate_model(SITE_MODELS[kind], data, source)  # type: ignore[return-value]


def load_site_model(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Site:
    """Read a site by built-in name (``slurm``) or YAML path, apply ``overrides``, validate.

    ``overrides`` is a nested mapping or uses dotted keys (``{"slurm.partition": "debug"}``).
    """
    builtin = builtin_sites()
    text = str(name_or_path)
    if text in builtin:
        path = builtin[text]
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"site {text!r}: not a built-in site ({', '.join(builtin)}) nor a YAML file")
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of site options")
        data = _merge(data, _dotted(overrides))
    return validate_site(data, source=str(path))


def load_site(name_or_path: str | Path, run_dir: str | Path,
              overrides: Mapping[str, Any] | None = None) -> Config:
    """``parsl.Config`` of a site: Parsl's runinfo and the block jobs' output under ``run_dir``."""
    return build_config(load_site_model(name_or_path, overrides), run_dir)


# ----------------------------------------------------------------------------- builders
def _bin_dir() -> Path:
    return Path(sys.executable).parent


def _activation(activate_env: bool) -> str:
    """Shell line putting the driver's Python environment first on the workers' PATH."""
    if not activate_env:
        return ""
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return f"source {shlex.quote(str(activate))}"
    return f"export PATH={shlex.quote(str(_bin_dir()))}:$PATH"


def _join(*lines: str) -> str:
    return "\n".join(s for s in (x.strip() for x in lines) if s)


def _interchange_cmd() -> list[str] | None:
    # Parsl starts "interchange.py" by name: use the driver env's copy even if not on PATH
    exe = _bin_dir() / "interchange.py"
    return [str(exe)] if exe.is_file() else None


def _address(site: _AddressMixin) -> str:
    from parsl.addresses import address_by_hostname, address_by_interface

    if site.address:
        return site.address
    if site.interface:
        try:
            return address_by_interface(site.interface)
        except OSError as err:
            raise ConfigError(f"site interface {site.interface!r}: {err}; this machine has: "
                              f"{interfaces_text()}") from None
    return address_by_hostname()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name
        try:
            return ipaddress.ip_address(socket.gethostbyname(address)).is_loopback
        except (OSError, ValueError):
            return False


def interfaces_text() -> str:
    """This machine's network interfaces and their addresses, e.g. ``eth0 10.0.0.5; lo
    127.0.0.1`` (link-local IPv6 addresses left out)."""
    import psutil

    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        ips = [a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
               and not a.address.lower().startswith("fe80")]
        if ips:
            out.append(f"{name} {', '.join(ips)}")
    return "; ".join(out) or "(none found)"


def this_host() -> set[str]:
    """Names Slurm may give this machine (short host name; SLURMD_NODENAME inside a job)."""
    return {socket.gethostname().split(".")[0], os.environ.get("SLURMD_NODENAME", "")} - {""}


def partition_nodes(sinfo: str, partitions: set[str | None]) -> set[str]:
    """Nodes of ``partitions`` (None: the default one) in ``sinfo -h -N -o '%N %P'`` output."""
    out = set()
    for line in sinfo.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        node, part = parts
        default = part.endswith("*")
        if part.rstrip("*") in partitions or (default and None in partitions):
            out.add(node)
    return out


def _sinfo_nodes(timeout: float) -> str | None:
    try:
        p = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %P"], capture_output=True, text=True,
                           timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def _slurm_other_nodes(site: SlurmSite) -> str | None:
    """Why blocks of this site may run on another node than this one (None: they cannot)."""
    classes = [site.classes.get(c) or SlurmClass(slurm=site.slurm) for c in RESOURCE_CLASSES]
    if any(c.slurm.nodes_per_block > 1 for c in classes):
        return "its blocks span several nodes (nodes_per_block > 1)"
    rows = _sinfo_nodes(max(c.slurm.cmd_timeout for c in classes))
    if rows is None:
        return "the partitions' nodes could not be listed (sinfo failed)"
    other = partition_nodes(rows, {c.slurm.partition for c in classes}) - this_host()
    if other:
        names = sorted(other)
        return (f"its blocks may run on other nodes ({', '.join(names[:4])}"
                + (", ..." if len(names) > 4 else "") + ")")
    return None


def _allocation_classes(site: SlurmAllocationSite, total: int
                        ) -> dict[str, tuple[AllocationClass, int]]:
    """Each class's options and node count within an allocation of ``total`` nodes."""
    out = {}
    for c in RESOURCE_CLASSES:
        w = site.classes.get(c) or AllocationClass()
        nodes = w.nodes or max(1, total - w.first_node)
        if w.first_node + nodes > total:
            raise ConfigError(f"site classes.{c}: first_node {w.first_node} + nodes {nodes} "
                              f"exceeds the allocation's {total} node(s)")
        out[c] = (w, nodes)
    return out


def _allocation_other_nodes(classes: dict[str, tuple[AllocationClass, int]]) -> str | None:
    """Why worker pools of this allocation may start on another node than the batch node
    (an ``mpi`` class runs its one pool on the batch node; its tasks srun elsewhere)."""
    away = sorted(c for c, (w, nodes) in classes.items()
                  if w.executor == "htex" and (w.first_node > 0 or nodes > 1))
    return f"classes {', '.join(away)} start workers on other nodes of the allocation" \
        if away else None


def worker_address(site: _AddressMixin, other_nodes: Any) -> str:
    """The address workers connect to. A loopback address only reaches workers on this
    machine: refused when it came from ``address: null`` (the host name resolved to it) and
    when ``other_nodes()`` (a reason, or None) says workers may run elsewhere; accepted with a
    warning when named explicitly for a one-node cluster. Errors list this machine's
    interfaces, to name one in ``interface:``."""
    address = _address(site)
    if not _is_loopback(address):
        return address
    name = f"site {site.kind}"
    fix = (f"Name the interface the compute nodes reach this machine on (`interface: NAME`) "
           f"or its address (`address: IP`); this machine has: {interfaces_text()}")
    if not (site.address or site.interface):
        raise ConfigError(f"{name}: address: null resolved this host's name "
                          f"({socket.gethostname()}) to {address}, a loopback address: workers "
                          f"on other nodes could never connect. {fix}. (On a one-node cluster "
                          "`address: 127.0.0.1` says so explicitly.)")
    why = other_nodes()
    if why:
        raise ConfigError(f"{name}: address {address} is a loopback address, but {why}: "
                          f"workers there could never connect. {fix}")
    log.warning("%s: loopback address %s: only workers on this machine can connect "
                "(a one-node cluster)", name, address)
    return address


def _accelerators(w: WorkerOptions) -> int | list[str]:
    a = w.available_accelerators
    return list(a) if isinstance(a, list) else int(a)


def _htex(label: str, w: WorkerOptions, provider: Any, address: str, run_dir: Path) -> Any:
    from parsl.executors import HighThroughputExecutor, MPIExecutor

    common = dict(label=label, provider=provider, address=address, encrypted=True,
                  worker_logdir_root=str(run_dir / "runinfo" / "workers"))
    if w.executor == "mpi":
        ex = MPIExecutor(mpi_launcher=w.mpi_launcher,
                         max_workers_per_block=w.max_workers_per_block, **common)
    else:
        ex = HighThroughputExecutor(cores_per_worker=w.cores_per_worker,
                                    max_workers_per_node=w.max_workers_per_node,
                                    available_accelerators=_accelerators(w),
                                    cpu_affinity=w.cpu_affinity, **common)
    cmd = _interchange_cmd()
    if cmd:  # (MPIExecutor's constructor types this argument differently: set it afterwards)
        ex.interchange_launch_cmd = cmd
    return ex


def _config(site: SiteBase, executors: list, run_dir: Path, **kw: Any) -> Config:
    (run_dir / "runinfo").mkdir(parents=True, exist_ok=True)
    return Config(executors=executors, run_dir=str(run_dir / "runinfo"), retries=site.retries,
                  strategy_period=site.strategy_period, max_idletime=site.max_idletime, **kw)


def build_local_threads(site: LocalThreadsSite, run_dir: Path) -> Config:
    execs = [ThreadPoolExecutor(label=c,
                                max_threads=site.classes.get(c, ThreadsClass()).max_threads)
             for c in RESOURCE_CLASSES]
    return _config(site, execs, run_dir, strategy="none")


def build_local_htex(site: LocalHtexSite, run_dir: Path) -> Config:
    from parsl.providers import LocalProvider

    execs = []
    for c in RESOURCE_CLASSES:
        w = site.classes.get(c, LocalHtexClass(max_workers_per_node=1))
        init = _join(_activation(site.activate_env), site.worker_init)
        provider = LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1, worker_init=init)
        execs.append(_htex(c, w, provider, site.address, run_dir))
    return _config(site, execs, run_dir)


def _slurm_provider(o: SlurmOptions, w: WorkerOptions, site: SlurmSite) -> Any:
    from parsl.launchers import SimpleLauncher, SrunLauncher
    from parsl.providers import SlurmProvider

    launcher = SimpleLauncher() if w.executor == "mpi" else SrunLauncher(overrides=o.srun_options)
    return SlurmProvider(
        partition=o.partition or "", account=o.account, qos=o.qos, constraint=o.constraint,
        clusters=o.clusters, walltime=o.walltime, nodes_per_block=o.nodes_per_block,
        cores_per_node=o.cores_per_node, mem_per_node=o.mem_per_node, exclusive=o.exclusive,
        init_blocks=o.init_blocks, min_blocks=o.min_blocks, max_blocks=o.max_blocks,
        parallelism=o.parallelism, scheduler_options=o.scheduler_options,
        gpus_per_node=o.gpus_per_node, gres=o.gres, cmd_timeout=o.cmd_timeout,
        worker_init=_join(_activation(site.activate_env), site.worker_init, o.worker_init),
        launcher=launcher)


def build_slurm(site: SlurmSite, run_dir: Path) -> Config:
    classes = {c: site.classes.get(c) or SlurmClass(slurm=site.slurm) for c in RESOURCE_CLASSES}
    for c, w in classes.items():
        if w.executor == "mpi" and w.slurm.nodes_per_block < w.nodes_per_task:
            raise ConfigError(f"site classes.{c}: nodes_per_task ({w.nodes_per_task}) exceeds "
                              f"slurm.nodes_per_block ({w.slurm.nodes_per_block})")
    address = worker_address(site, lambda: _slurm_other_nodes(site))
    execs = [_htex(c, w, _slurm_provider(w.slurm, w, site), address, run_dir)
             for c, w in classes.items()]
    return _config(site, execs, run_dir)


class BlockSrunLauncher(SrunLauncher):
    """SrunLauncher for blocks inside one allocation.

    Parsl's SrunLauncher writes the pool command to ``cmd_$SLURM_JOB_NAME.sh``: every block of
    one allocation shares that job name, so their scripts would overwrite each other. This one
    names the file (and the job step) after the block instead.
    """

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                 script_dir: str = "") -> str:
        body = super().__call__(command, tasks_per_node, nodes_per_block, script_dir)
        return 'export SLURM_JOB_NAME="$JOBNAME"\n' + body


def build_slurm_allocation(site: SlurmAllocationSite, run_dir: Path) -> Config:
    from parsl.launchers import SimpleLauncher
    from parsl.providers import LocalProvider

    if not os.environ.get("SLURM_JOB_ID"):
        raise ConfigError("site 'slurm-allocation' runs inside an sbatch/salloc allocation "
                          "(SLURM_JOB_ID is not set): use scripts/campaign.sbatch")
    total = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
    classes = _allocation_classes(site, total)
    address = worker_address(site, lambda: _allocation_other_nodes(classes))
    init = _join(_activation(site.activate_env), site.worker_init)
    execs = []
    for c, (w, nodes) in classes.items():
        if w.executor == "mpi":
            launcher = SimpleLauncher()  # one pool on the batch node; tasks srun over the nodes
            nodes_per_block = 1
        else:
            opts = f"{site.srun_options} --nodes={nodes} --relative={w.first_node}"
            launcher = BlockSrunLauncher(overrides=opts.strip())
            nodes_per_block = nodes
        provider = LocalProvider(nodes_per_block=nodes_per_block, init_blocks=1, min_blocks=0,
                                 max_blocks=1, launcher=launcher, worker_init=init)
        execs.append(_htex(c, w, provider, address, run_dir))
    return _config(site, execs, run_dir)


def globus_executor(cls: str, g: GlobusClass, site: GlobusComputeSite) -> Any:
    """Parsl GlobusComputeExecutor for one class (builds the SDK objects; no network traffic)."""
    from globus_compute_sdk import Client, Executor
    from parsl.executors import GlobusComputeExecutor

    client = Client(do_version_check=site.version_check)
    gce = Executor(endpoint_id=str(g.endpoint_id), client=client, amqp_port=site.amqp_port,
                   resource_specification=g.resource_specification,
                   user_endpoint_config=g.user_endpoint_config, label=f"alflow-{cls}")
    return GlobusComputeExecutor(executor=gce, label=cls)


def build_globus_compute(site: GlobusComputeSite, run_dir: Path) -> Config:
    execs = []
    for c in RESOURCE_CLASSES:
        g = site.classes.get(c) or GlobusClass()
        if g.endpoint_id is None:
            execs.append(ThreadPoolExecutor(label=c, max_threads=g.max_threads))
        else:
            execs.append(globus_executor(c, g, site))
    return _config(site, execs, run_dir, strategy="none")


BUILDERS = {
    "local-threads": build_local_threads,
    "local-htex": build_local_htex,
    "slurm": build_slurm,
    "slurm-allocation": build_slurm_allocation,
    "globus-compute": build_globus_compute,
}


def build_config(site: Site, run_dir: str | Path) -> Config:
    """Turn a validated site into a ``parsl.Config`` with runinfo in ``run_dir/runinfo``."""
    return BUILDERS[site.kind](site, Path(run_dir).resolve())  # type: ignore[operator]


def local_threads(run_dir: str | Path, max_threads: int = 2) -> Config:
    """Every resource class on a ThreadPoolExecutor in this process (tests, quick runs)."""
    site = LocalThreadsSite(classes={c: ThreadsClass(max_threads=max_threads)
                                     for c in RESOURCE_CLASSES})
    return build_local_threads(site, Path(run_dir).resolve())


# ----------------------------------------------------------------------------- helpers
def mpi_resource_spec(site: Site, cls: str = "dft") -> dict[str, Any] | None:
    """``parsl_resource_specification`` for an MPI task of ``cls``, or None if not MPI.

    Pass it to a bash_app whose command starts with ``$PARSL_MPI_PREFIX`` (``srun --ntasks ...``).
    """
    w = getattr(site, "classes", {}).get(cls)
    if not isinstance(w, WorkerOptions) or w.executor != "mpi":
        return None
    spec: dict[str, Any] = {"num_nodes": w.nodes_per_task, "ranks_per_node": w.ranks_per_node,
                            "num_ranks": w.nodes_per_task * w.ranks_per_node}
    if w.launcher_options:
        spec["launcher_options"] = w.launcher_options
    return spec


def mpi_command(argv: list[str]) -> str:
    """Shell command running ``argv`` under the MPI launcher Parsl composed for the task.

    ``mpi_command([sys.executable, "-m", "alflow.labelling.batch", ...])`` ->
    ``$PARSL_MPI_PREFIX /path/python -m alflow.labelling.batch ...``.
    """
    return "$PARSL_MPI_PREFIX " + " ".join(shlex.quote(a) for a in argv)


@contextlib.contextmanager
def parsl_session(config: Config) -> Iterator[Any]:
    """Load ``config`` into Parsl; on exit wait for nothing, scancel the blocks, clear Parsl."""
    import parsl

    dfk = parsl.load(config)
    # Parsl's debug log goes to runinfo/NNN/parsl.log; keep it off the console / driver log
    logging.getLogger("parsl").propagate = False
    try:
        yield dfk
    finally:
        try:
            dfk.cleanup()
        finally:
            parsl.clear()
