"""The globus-compute site up to the network.

The Globus Compute cloud service cannot be reached from the test machines, so these tests run the
real code path (site validation, the SDK's Executor and Parsl's GlobusComputeExecutor inside a
real Parsl DataFlowKernel) and replace only the transport: each submitted (function, args, kwargs)
goes through the SDK's own ComputeSerializer exactly as it would be shipped to an endpoint,
is deserialized and run as the endpoint would, and its result is serialized back.
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future

import numpy as np
import parsl
import pytest
from ase.build import bulk
from globus_compute_sdk.serialize import ComputeSerializer
from parsl import python_app
from parsl.executors import GlobusComputeExecutor, ThreadPoolExecutor

from alflow.campaign import sites
from alflow.errors import ConfigError

EP = str(uuid.UUID(int=0x1234, version=4))


@pytest.fixture(autouse=True)
def _private_compute_dir(tmp_path, monkeypatch):
    # the SDK keeps its token store there; never touch the user's ~/.globus_compute
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "gc"))


def _site(**extra):
    o = {"version_check": False, "classes.dft.endpoint_id": EP, "amqp_port": 443,
         "classes.dft.resource_specification": {"num_nodes": 1, "ranks_per_node": 2}}
    o.update(extra)
    return sites.load_site_model("globus-compute", o)


def test_globus_site_validation():
    with pytest.raises(ConfigError, match="classes.dft.endpoint_id"):
        sites.load_site_model("globus-compute", {"classes.dft.endpoint_id": "ep-1"})
    with pytest.raises(ConfigError, match="amqp_port"):
        sites.load_site_model("globus-compute", {"amqp_port": 80})
    with pytest.raises(ConfigError, match="no class has an endpoint_id"):
        sites.load_site_model("globus-compute", {"classes.dft.endpoint_id": None})


def test_globus_config_builds_executor_without_network(tmp_path):
    cfg = sites.build_config(_site(), tmp_path)
    ex = {e.label: e for e in cfg.executors}
    assert isinstance(ex["dft"], GlobusComputeExecutor)
    assert isinstance(ex["cpu"], ThreadPoolExecutor) and isinstance(ex["gpu"], ThreadPoolExecutor)
    gce = ex["dft"].executor
    assert str(gce.endpoint_id) == EP and gce.amqp_port == 443
    assert ex["dft"].resource_specification == {"num_nodes": 1, "ranks_per_node": 2}
    gce.shutdown(wait=False, cancel_futures=True)


def emt_label(atoms_list, method):
    """A labelling-shaped task: energies (eV) and forces (eV/Å) of structures with ASE's EMT."""
    from ase.calculators.emt import EMT

    out = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = EMT()
        out.append({"energy": float(atoms.get_potential_energy()),
                    "forces": atoms.get_forces(), "method": method})
    return out


class _Endpoint:
    """Stands in for the network + endpoint: ships payloads through the SDK's serializer."""

    def __init__(self, serializer: ComputeSerializer):
        self.ser = serializer
        self.shipped: list[tuple[int, int]] = []
        self.resource_specs: list = []

    def submit(self, gce, func, *args, **kwargs):
        s = self.ser
        fn_buf = s.pack_buffers([s.serialize(func)])          # what register_function sends
        arg_buf = s.pack_buffers([s.serialize(args), s.serialize(kwargs)])   # task payload
        self.shipped.append((len(fn_buf), len(arg_buf)))
        self.resource_specs.append(gce.resource_specification)
        rfunc = s.deserialize(s.unpack_buffers(fn_buf)[0])   # endpoint side
        rargs, rkwargs = (s.deserialize(b) for b in s.unpack_buffers(arg_buf))
        fut: Future = Future()
        try:
            result_buf = s.serialize(rfunc(*rargs, **rkwargs))
            fut.set_result(s.deserialize(result_buf))           # back on the client
        except Exception as err:  # remote exceptions come back as exceptions
            fut.set_exception(err)
        return fut


def test_parsl_app_through_globus_executor_serializes_round_trip(tmp_path, monkeypatch):
    cfg = sites.build_config(_site(), tmp_path)
    gcx = {e.label: e for e in cfg.executors}["dft"]
    gce = gcx.executor
    endpoint = _Endpoint(gce.serializer if hasattr(gce, "serializer") else ComputeSerializer())
    monkeypatch.setattr(gce, "submit", lambda f, *a, **k: endpoint.submit(gce, f, *a, **k))

    class _NoWatcher:  # the AMQP result watcher is network too
        def shutdown(self, *a, **k):
            pass

    monkeypatch.setattr(gce, "_get_result_watcher", lambda: _NoWatcher())
    app = python_app(emt_label, executors=["dft"])
    structures = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Cu", "fcc", a=3.7, cubic=True)]
    structures[1].rattle(0.05, seed=1)
    parsl.load(cfg)
    try:
        got = app(structures, method="ase:emt").result(timeout=60)
        with pytest.raises(ZeroDivisionError):   # a remote failure reaches the caller
            python_app(_fails, executors=["dft"])().result(timeout=60)
    finally:
        parsl.dfk().cleanup()
        parsl.clear()
    direct = emt_label(structures, "ase:emt")
    assert len(got) == 2 and all(g["method"] == "ase:emt" for g in got)
    for g, d in zip(got, direct, strict=True):
        assert g["energy"] == d["energy"]
        np.testing.assert_array_equal(g["forces"], d["forces"])
    assert got[0]["energy"] < got[1]["energy"]  # the strained, rattled cell is higher in energy
    assert len(endpoint.shipped) == 2 and all(f > 0 and a > 0 for f, a in endpoint.shipped)
    assert endpoint.resource_specs[0] == {"num_nodes": 1, "ranks_per_node": 2}


def _fails():
    return 1 / 0
