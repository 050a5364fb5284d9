"""Site configs: validation errors name the field; built configs are encrypted and bound."""

from __future__ import annotations

import pytest
from parsl.executors import HighThroughputExecutor, MPIExecutor, ThreadPoolExecutor
from parsl.launchers import SimpleLauncher, SrunLauncher
from parsl.providers import LocalProvider, SlurmProvider

from alflow.campaign import sites
from alflow.errors import ConfigError


def test_every_builtin_site_is_found_and_valid():
    names = sites.builtin_sites()
    assert set(names) == set(sites.SITE_KINDS)
    for name in names:
        model = sites.load_site_model(name)
        assert model.kind == name


@pytest.mark.parametrize(
    ("site", "override", "field"),
    [
        ("slurm", {"slurm.partiton": "debug"}, "slurm.partiton: unknown field"),
        ("slurm", {"classes.dft.slurm.walltime": "2h"}, "classes.dft.slurm.walltime"),
        ("slurm", {"classes.dft.executor": "mpl"}, "classes.dft.executor"),
        ("slurm", {"classes.gpu.cores_per_worker": 0}, "classes.gpu.cores_per_worker"),
        ("slurm", {"slurm.max_blocks": 1, "slurm.init_blocks": 3}, "slurm"),
        ("local-htex", {"classes.tpu": {}}, "classes.tpu"),
        ("globus-compute", {"classes.dft.endpoint_id": "not-a-uuid"}, "classes.dft.endpoint_id"),
        ("slurm-allocation", {"classes.cpu.first_node": -1}, "classes.cpu.first_node"),
    ],
)
def test_wrong_option_names_the_field(site, override, field):
    with pytest.raises(ConfigError) as err:
        sites.load_site_model(site, override)
    assert field in str(err.value)
    assert f"{site}.yaml" in str(err.value)  # and the file


def test_user_file_unknown_kind_and_missing_file(tmp_path):
    f = tmp_path / "mysite.yaml"
    f.write_text("kind: pbs\n")
    with pytest.raises(ConfigError, match="kind: expected one of"):
        sites.load_site_model(f)
    with pytest.raises(ConfigError, match="not a built-in site"):
        sites.load_site_model(tmp_path / "nope.yaml")
    f.write_text("kind: local-threads\nclasses: {dft: {max_threads: 3}}\n")
    cfg = sites.load_site(f, tmp_path / "run")
    assert {e.label: e.max_threads for e in cfg.executors}["dft"] == 3
    assert cfg.run_dir == str((tmp_path / "run" / "runinfo").resolve())


def test_class_slurm_options_inherit_and_override(tmp_path):
    m = sites.load_site_model("slurm", {"address": "10.1.2.3", "slurm.partition": "cpu",
                                        "slurm.account": "chem",
                                        "classes.gpu.slurm": {"partition": "gpu",
                                                              "gpus_per_node": 4}})
    assert m.classes["cpu"].slurm.partition == "cpu"
    assert m.classes["gpu"].slurm.partition == "gpu"
    assert m.classes["gpu"].slurm.account == "chem"  # inherited
    cfg = sites.build_config(m, tmp_path)
    gpu = {e.label: e for e in cfg.executors}["gpu"]
    assert "--partition=gpu" in gpu.provider.scheduler_options
    assert "--account=chem" in gpu.provider.scheduler_options


def test_local_htex_is_encrypted_and_bound_to_loopback(tmp_path):
    cfg = sites.load_site("local-htex", tmp_path)
    assert [e.label for e in cfg.executors] == list(sites.RESOURCE_CLASSES)
    for e in cfg.executors:
        assert isinstance(e, HighThroughputExecutor)
        assert e.encrypted is True
        assert e.address == "127.0.0.1" and e.all_addresses == {"127.0.0.1"}
        assert isinstance(e.provider, LocalProvider)


def test_slurm_site_builds_htex_and_mpi_executors(tmp_path):
    m = sites.load_site_model("slurm", {
        "address": "10.1.2.3", "slurm.partition": "compute", "slurm.qos": "normal",
        "slurm.exclusive": False, "slurm.cores_per_node": 8, "slurm.worker_init": "module load x",
        "classes.dft": {"executor": "mpi", "ranks_per_node": 4, "nodes_per_task": 2,
                        "slurm": {"nodes_per_block": 2}},
        "classes.gpu": {"available_accelerators": 4, "max_workers_per_node": 4}})
    cfg = sites.build_config(m, tmp_path)
    ex = {e.label: e for e in cfg.executors}
    assert isinstance(ex["dft"], MPIExecutor) and ex["dft"].mpi_launcher == "srun"
    assert isinstance(ex["dft"].provider.launcher, SimpleLauncher)
    assert isinstance(ex["cpu"].provider.launcher, SrunLauncher)
    for e in ex.values():
        assert isinstance(e.provider, SlurmProvider)
        assert e.encrypted is True and e.address == "10.1.2.3"
        assert "--exclusive" not in e.provider.scheduler_options
        assert "module load x" in e.provider.worker_init
        assert "activate" in e.provider.worker_init  # the driver's environment
    assert ex["gpu"].available_accelerators == ["0", "1", "2", "3"]
    spec = sites.mpi_resource_spec(m, "dft")
    assert spec == {"num_nodes": 2, "ranks_per_node": 4, "num_ranks": 8}
    assert sites.mpi_resource_spec(m, "cpu") is None
    # an MPI task needing more nodes than a block holds is refused, naming the class
    bad = sites.load_site_model("slurm", {"classes.dft": {"executor": "mpi", "nodes_per_task": 3}})
    with pytest.raises(ConfigError, match="classes.dft"):
        sites.build_config(bad, tmp_path)


def test_slurm_allocation_needs_an_allocation(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="SLURM_JOB_ID"):
        sites.load_site("slurm-allocation", tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    cfg = sites.load_site("slurm-allocation", tmp_path, {
        "address": "10.1.2.3", "classes.dft": {"nodes": 2, "first_node": 1}})
    ex = {e.label: e for e in cfg.executors}
    assert isinstance(ex["dft"].provider, LocalProvider)  # no nested sbatch
    assert ex["dft"].provider.nodes_per_block == 2
    assert "--relative=1" in ex["dft"].provider.launcher.overrides
    assert "--overlap" in ex["dft"].provider.launcher.overrides
    with pytest.raises(ConfigError, match="classes.cpu"):
        sites.load_site("slurm-allocation", tmp_path, {"address": "10.1.2.3",
                                                       "classes.cpu.first_node": 3})


def test_address_null_resolving_to_loopback_is_refused_naming_interfaces(tmp_path,
                                                                       monkeypatch):
    import parsl.addresses
    import psutil

    # the host name resolves to a loopback address, as /etc/hosts often makes it (127.0.1.1)
    monkeypatch.setattr(parsl.addresses, "address_by_hostname", lambda: "127.0.1.1")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    some_interface = sorted(psutil.net_if_addrs())[0]
    for kind in ("slurm", "slurm-allocation"):
        with pytest.raises(ConfigError) as err:
            sites.load_site(kind, tmp_path)
        msg = str(err.value)
        assert "address: null resolved" in msg and "127.0.1.1" in msg, msg
        assert "interface: NAME" in msg and some_interface in msg, msg


def test_wildcard_addresses_are_refused_for_every_htex_site():
    for kind in ("local-htex", "slurm", "slurm-allocation"):
        for wildcard in ("0.0.0.0", "::", "*"):
            with pytest.raises(ConfigError, match="address: .*binds every interface"):
                sites.load_site_model(kind, {"address": wildcard})


def test_explicit_loopback_only_where_every_worker_runs_on_this_machine(tmp_path, monkeypatch):
    here = sorted(sites.this_host())[0]
    monkeypatch.setattr(sites, "_sinfo_nodes", lambda timeout: f"{here} debug*\nn2 debug*\n"
                        f"{here} solo\n")
    loop = {"address": "127.0.0.1", "slurm.partition": "debug"}
    with pytest.raises(ConfigError, match=r"loopback address, but its blocks may run on other "
                                          r"nodes \(n2\).*this machine has: "):
        sites.load_site("slurm", tmp_path, loop)
    with pytest.raises(ConfigError, match="nodes_per_block > 1"):
        sites.load_site("slurm", tmp_path, {**loop, "slurm.partition": "solo",
                                            "slurm.nodes_per_block": 2})
    cfg = sites.load_site("slurm", tmp_path, {**loop, "slurm.partition": "solo"})  # one node
    assert {e.address for e in cfg.executors} == {"127.0.0.1"}
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    with pytest.raises(ConfigError, match="classes dft start workers on other nodes"):
        sites.load_site("slurm-allocation", tmp_path, {"interface": "lo"})
    # pools on the batch node only: its own htex nodes: 1, an MPI class srun-ing over both
    one = {"interface": "lo", "classes": {"cpu": {"nodes": 1}, "gpu": {"nodes": 1},
                                          "dft": {"executor": "mpi", "nodes_per_task": 2}}}
    cfg = sites.load_site("slurm-allocation", tmp_path, one)
    assert {e.address for e in cfg.executors} == {"127.0.0.1"}
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    cfg = sites.load_site("slurm-allocation", tmp_path, {"interface": "lo"})
    assert {e.address for e in cfg.executors} == {"127.0.0.1"}


def test_partition_nodes_of_sinfo_rows():
    rows = "a debug*\nb debug*\nb gpu\nc gpu\n\n"
    assert sites.partition_nodes(rows, {None}) == {"a", "b"}
    assert sites.partition_nodes(rows, {"gpu"}) == {"b", "c"}
    assert sites.partition_nodes(rows, {"gpu", None}) == {"a", "b", "c"}
    assert sites.partition_nodes(rows, {"none"}) == set()


def test_local_threads_helper(tmp_path):
    cfg = sites.local_threads(tmp_path, max_threads=3)
    assert all(isinstance(e, ThreadPoolExecutor) and e.max_threads == 3 for e in cfg.executors)
    assert [e.label for e in cfg.executors] == ["cpu", "dft", "gpu"]


def _pid_and_double(x):
    import os

    return os.getpid(), 2 * x


def test_local_htex_runs_tasks_in_encrypted_worker_processes(tmp_path):
    import os
    from pathlib import Path

    from parsl import python_app

    cfg = sites.load_site("local-htex", tmp_path, {
        "strategy_period": 0.5, "worker_init": f"export PYTHONPATH={Path(__file__).parent}"})
    app = python_app(_pid_and_double, executors=["dft"])
    with sites.parsl_session(cfg):
        got = [app(i).result(timeout=120) for i in range(3)]
    assert [v for _, v in got] == [0, 2, 4]
    assert all(pid != os.getpid() for pid, _ in got)  # in a worker process, not the driver
    # CurveZMQ keys of the encrypted channel were made inside the run directory
    assert list((tmp_path / "runinfo").rglob("certificates/server.key_secret"))
