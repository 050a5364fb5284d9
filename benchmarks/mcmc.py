"""Benchmark: adaptive MCMC (MALA + flow moves, exact quench-basin restriction) walker-steps/s.

The campaign's configuration of :func:`alflow.sampling.mcmc.adaptive_mcmc`, as
``alflow.flows.pipeline.state_free_energy`` calls it in the ``flows`` step:

- lj7 (18 K): a committee MLIP trained with the lj7 example's ``mlip`` section (``--quick``:
  200 instead of 1000 L-BFGS polish steps) on plain-LJ labels of Langevin frames of both
  isomers (cached in ``--work``: the first run trains it, 3 min), the example's flow
  (4 coupling layers × 32, 300 training steps on MD seeds of the committee) and its
  ``sampler.mcmc`` settings (16 walkers; 60 MALA steps of h = 0.1 Å and 16 flow moves per
  iteration; 3 adaptation iterations retraining the flow), hard wall 8.5125 Å, states by
  quench basin of the committee (``BasinStates``, tolerance 0.05 Å);
- ag6_emt (300 K): ASE's EMT in torch (``alflow.emt``), EMT's two lowest minima
  (octahedron, bicapped tetrahedron) by quench basin, the same flow and MCMC settings;
- lj7_calls: the CPU time of one call of the lj7 committee (energies and forces of every
  member) on 1, 16 and 64 configurations, its members in one stacked pass against one after
  another, interleaved in one process (float32 and float64).

A walker-step is one MALA step or one flow move of one walker; the rate excludes the flow's
retraining (``MCMCResult.train_seconds``, and its CPU time for the rate per CPU second) and
counts every state check. A draw is one walker's position after one production iteration
(what the estimate and R-hat use): draws per CPU second compare settings with different
walkers and steps per iteration, which walker-steps do not. Also printed: the
configurations handed to the state check (``membership_calls``) and the force evaluations
spent on quenching them (``quench_force_evals``). ``--quick`` trains the flows 50 steps
instead of 300 and runs 6 production iterations instead of 30 (same figures).
``--settings JSON`` overrides the example's ``sampler.mcmc`` (e.g. ``'{"walkers": 32}'``)
for both revisions.

Each system runs on the ``--baseline`` revision (default fe69844, the MCMC before late state
checks; its ``alflow`` extracted with ``git archive``) and then on this checkout, each in a
fresh process, one right after the other, and the ratio of their rates is printed (by wall
time and by CPU time: on a shared machine the second is the steadier). ``--baseline none``
measures this checkout only (whatever ``alflow`` imports). The last line is one JSON object:
per system the rates, state checks and acceptances (and the baseline's, with the ratios),
the load average at the start and at the end, and this checkout's commit.

    python benchmarks/mcmc.py [--quick] [--systems lj7,ag6_emt,lj7_calls] [--work DIR]
                              [--baseline REV]
                              [--settings JSON]
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402

import alflow  # noqa: E402
from alflow.emt import EMT  # noqa: E402
from alflow.flows import BoltzmannGenerator, FlowConfig, train_flow  # noqa: E402
from alflow.potential import LennardJones, evaluate  # noqa: E402
from alflow.sampling.langevin import run_langevin  # noqa: E402
from alflow.sampling.mcmc import adaptive_mcmc  # noqa: E402
from alflow.states import BasinStates, wall  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "alflow" / "examples" / "data"
LJ7_WALL = 8.5125  # Å
BASELINE = "fe69844"  # the MCMC before late state checks
COMMITTEE: Path | None = None  # the lj7 committee, when given (--committee)


class Counted:
    """A potential that counts the configurations it evaluates (all, and inside state checks)."""

    def __init__(self, potential):
        self.potential = potential
        self.numbers = potential.numbers
        self.configs = 0
        self.in_check = False
        self.check_configs = 0

    def _count(self, n: int) -> None:
        self.configs += n
        if self.in_check:
            self.check_configs += n

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        self._count(len(positions))
        return self.potential.energy(positions)

    def evaluate(self, positions: torch.Tensor):
        self._count(len(positions))
        return evaluate(self.potential, positions)


def _example() -> dict:
    return yaml.safe_load((ROOT / "alflow" / "examples" / "lj7.yaml").read_text())


def lj7_committee(work: Path, quick: bool) -> Path:
    """The lj7 example's committee on LJ labels of 18-40 K Langevin frames (cached under
    the hash of its settings, so a changed example trains a new one; a process comparing a
    baseline revision is handed the directory with ``--committee``)."""
    from alflow.campaign.checkpoint import task_key
    from alflow.mlip import MLIPConfig, train_committee

    if COMMITTEE is not None:
        return _loadable(COMMITTEE)
    cfg = MLIPConfig(**{**_example()["mlip"], **({"polish_steps": 200} if quick else {})})
    key = task_key("mlip", cfg.model_dump())[:16]
    out = work / f"lj7-committee-{'quick-' if quick else ''}{key}"
    if (out / "done").exists():
        return out
    lj = LennardJones(np.full(7, 18))
    frames = {a.info["state"]: a for a in ase.io.read(DATA / "lj7.extxyz", ":")}
    xs = []
    for k, a in enumerate(frames.values()):
        for t_k in (18.0, 30.0, 40.0):
            tr = run_langevin(lj, np.repeat(a.positions[None], 4, 0), a.get_masses(), t_k,
                              10.0, 400, 0.01, record_every=20, seed=k)
            xs.append(np.asarray(tr.positions[2:]).reshape(-1, 7, 3))
    x = np.concatenate(xs)
    ev = evaluate(lj, torch.as_tensor(x))
    data = []
    for p, e, f in zip(x, ev.energy.numpy(), ev.forces.numpy(), strict=True):
        atoms = Atoms("Ar7", positions=p)
        atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=f)
        data.append(atoms)
    t0 = time.perf_counter()
    train_committee(data, out, cfg)
    (out / "done").write_text("ok")
    print(f"# lj7 committee trained on {len(data)} LJ frames in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _loadable(model_dir: Path) -> Path:
    """``model_dir`` as the imported ``alflow`` can load it: settings it does not know (a
    baseline revision's ``MLIPConfig`` predates e.g. ``inference_dtype``) are dropped in a
    copy of ``committee.json`` beside links to the members (the members' weights do not
    change; the committee is evaluated as that revision evaluates it)."""
    from alflow.mlip import MLIPConfig

    meta = json.loads((model_dir / "committee.json").read_text())
    unknown = sorted(set(meta["config"]) - set(MLIPConfig.model_fields))
    if not unknown:
        return model_dir
    out = model_dir.with_name(f"{model_dir.name}-without-{'-'.join(unknown)}")
    out.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        if f.name != "committee.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in unknown}
    (out / "committee.json").write_text(json.dumps(meta, indent=1))
    return out


def _mcmc_config(quick: bool, settings: dict | None = None) -> tuple[dict, int]:
    mc = {**_example()["exploration"]["sampler"]["mcmc"], **(settings or {})}
    walkers = mc.pop("walkers")
    for k in ("retrain_steps", "estimator"):
        mc.pop(k)
    mc["iterations"] = mc["adapt_iterations"] + (6 if quick else 30)
    return mc, walkers


def run_system(name: str, pot, refs: dict[str, np.ndarray], masses: np.ndarray,
               t_k: float, wall_radius: float | None, quick: bool, step_size: float,
               settings: dict | None = None) -> dict:
    """Seeds by Langevin MD, the example's flow, then adaptive MCMC in each state."""
    counted = Counted(pot)
    states = BasinStates(counted, refs, tolerance=0.05)
    mc, walkers = _mcmc_config(quick, settings)
    mc["step_size"] = step_size
    sampler = _example()["exploration"]["sampler"]
    restrict = wall(wall_radius, masses) if wall_radius else None
    per_state, steps, draws, seconds, cpu_seconds = {}, 0, 0, 0.0, 0.0
    for k, s in enumerate(states.names):
        x_min = states.minima[k]
        tr = run_langevin(pot, np.repeat(x_min[None], 16, 0), masses, t_k, 5.0, 300, 0.01,
                          record_every=10, seed=k)
        seeds = np.asarray(tr.positions[6:]).reshape(-1, *x_min.shape)
        member_of = states.member(s)
        seeds = seeds[np.asarray(member_of(torch.as_tensor(seeds)), dtype=bool)]
        bg = BoltzmannGenerator.build(x_min, pot.numbers, FlowConfig(**sampler["flow"]),
                                      samples=seeds, init=torch.Generator().manual_seed(k))
        train = {**sampler["train"], "seed": k, **({"steps": 50} if quick else {})}
        train_flow(bg, seeds, config=train)
        x0 = seeds[np.random.default_rng(k).choice(len(seeds), walkers)]
        calls = [0, 0]

        def member(y, member_of=member_of, calls=calls):
            calls[0] += 1
            calls[1] += len(y)
            counted.in_check = True
            try:
                return torch.as_tensor(member_of(y))
            finally:
                counted.in_check = False

        # the state check answered during the next MALA steps, where the code has it
        checker = states.checker(s) if hasattr(states, "checker") else None
        counted.configs = counted.check_configs = 0
        t0, c0 = time.perf_counter(), time.process_time()
        # the flow is retrained during adaptation, as in the pipeline (older code retrains
        # inside adaptive_mcmc and has no ``retrain`` argument)
        train_cpu = [0.0]

        def retrain_flow(d, c, bg=bg, train_cpu=train_cpu):
            c1 = time.process_time()
            train_flow(bg, d, config=c)
            train_cpu[0] += time.process_time() - c1

        retrain = ({"retrain": retrain_flow}
                   if "retrain" in inspect.signature(adaptive_mcmc).parameters else {})
        res = adaptive_mcmc(counted, bg, x0, t_k, {**mc, "seed": k}, restrict=restrict,
                            member=member if checker is None else checker,
                            train_samples=seeds, **retrain)
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        if checker is not None:
            calls = [checker.submissions, checker.submitted]
            counted.check_configs = checker.fire.force_evals
        n = walkers * mc["iterations"] * (mc["local_steps"] + mc["global_steps"])
        n_draws = walkers * (mc["iterations"] - mc["adapt_iterations"])
        sec = wall_s - res.train_seconds
        cpu = cpu_s - train_cpu[0]
        per_state[s] = {"walker_steps_per_s": round(n / sec, 1), "seconds": round(sec, 2),
                        "walker_steps_per_cpu_s": round(n / cpu, 1), "cpu_seconds": round(cpu, 2),
                        "draws_per_cpu_s": round(n_draws / cpu, 2),
                        "membership_calls": calls[0], "membership_configs": calls[1],
                        "quench_force_evals": counted.check_configs,
                        "force_evals": counted.configs,
                        "local_acceptance": round(res.local_acceptance, 3),
                        "global_acceptance": round(res.global_acceptance, 3),
                        "left_state": round(res.left_state, 4)}
        steps += n
        draws += n_draws
        seconds += sec
        cpu_seconds += cpu
        print(f"{name}/{s}: {n / sec:8.1f} walker-steps/s ({n} in {sec:.1f} s, "
              f"{n / cpu:.1f} per CPU s; {n_draws / cpu:.1f} draws per CPU s); state checks: "
              f"{calls[0]} calls, {calls[1]} configurations, {counted.check_configs} quench "
              f"force evaluations; acceptance MALA {res.local_acceptance:.2f}, flow "
              f"{res.global_acceptance:.2f}; blocks left the state {res.left_state:.3f}",
              flush=True)
    return {"walker_steps_per_s": round(steps / seconds, 1),
            "walker_steps_per_cpu_s": round(steps / cpu_seconds, 1),
            "draws_per_cpu_s": round(draws / cpu_seconds, 2), "walkers": walkers,
            "local_steps": mc["local_steps"], "global_steps": mc["global_steps"],
            "membership_calls": sum(v["membership_calls"] for v in per_state.values()),
            "membership_configs": sum(v["membership_configs"] for v in per_state.values()),
            "quench_force_evals": sum(v["quench_force_evals"] for v in per_state.values()),
            "seconds": round(seconds, 1), "states": per_state}


def _cpu_ms(fn, n: int) -> float:
    c0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n * 1e3


def committee_calls(model_dir: Path, quick: bool) -> dict:
    """CPU ms of one committee call (energies and forces of every member, ``predict_dense``)
    on B = 1, 16, 64 lj7 configurations: the members in one stacked pass against the
    members one after another (``Committee.predict``), interleaved in this process, median
    of the rounds; in float32 (the example's inference dtype) and float64."""
    from alflow.mlip import Committee
    from alflow.mlip.graph import DenseBatch

    x0 = ase.io.read(DATA / "lj7.extxyz", 0).positions
    rng = np.random.default_rng(0)
    out: dict = {}
    for dtype in ("float32", "float64"):
        c = Committee.load(model_dir).to_dtype(dtype)
        sp = c.species(np.full(7, 18))
        for b in (1, 16, 64):
            x = torch.as_tensor(x0[None] + 0.05 * rng.standard_normal((b, 7, 3)))

            def leaf(x=x, c=c, sp=sp):
                y = x.to(c.dtype).requires_grad_(True)
                return DenseBatch(y, sp), y

            def stacked(x=x, c=c, sp=sp):
                return c.predict_dense(x, sp)

            def loop(x=x, leaf=leaf, c=c):
                return c.predict(leaf, x.shape[:2])

            n = max(20, (400 if quick else 2000) // (b + 4))
            rounds = [(_cpu_ms(stacked, n), _cpu_ms(loop, n)) for _ in range(5)]
            new, old = (float(np.median(v)) for v in zip(*rounds, strict=True))
            out[f"{dtype}_B{b}"] = {"stacked_ms": round(new, 3), "loop_ms": round(old, 3),
                                    "speedup": round(old / new, 2)}
            print(f"lj7 committee call ({len(c.members)} members, {dtype}, B = {b}): "
                  f"{new:.2f} ms stacked, {old:.2f} ms member loop (CPU ms per call, "
                  f"x{old / new:.2f}); load {os.getloadavg()[0]:.2f}", flush=True)
    return out


def bench_lj7(work: Path, quick: bool, settings: dict | None = None) -> dict:
    from alflow.mlip import load_potential

    pot = load_potential(lj7_committee(work, quick), np.full(7, 18))
    frames = {a.info["state"]: a for a in ase.io.read(DATA / "lj7.extxyz", ":")}
    refs = {"pbp": frames["bipyramid"].positions, "coh": frames["capped_octahedron"].positions}
    refs = {s: x - x.mean(0) for s, x in refs.items()}
    return run_system("lj7", pot, refs, np.full(7, 39.948), 18.0, LJ7_WALL, quick, 0.1,
                      settings)


def bench_ag6_emt(work: Path, quick: bool, settings: dict | None = None) -> dict:
    frames = {a.info["state"]: a for a in ase.io.read(DATA / "ag6_emt.extxyz", ":")}
    order = ["octahedron", "bicapped_tetrahedron"]
    refs = {s: frames[s].positions - frames[s].positions.mean(0) for s in order}
    a = frames[order[0]]
    return run_system("ag6_emt", EMT(a.numbers), refs, a.get_masses(), 300.0, None, quick,
                      0.05, settings)


def _commit() -> str | None:
    """This checkout's commit (None outside a git work tree)."""
    res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() or None if res.returncode == 0 else None


def _baseline_tree(rev: str, work: Path) -> Path:
    """The package at git revision ``rev`` of this checkout, extracted under ``work``."""
    out = work / f"baseline-{rev}"
    if not (out / "alflow").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "alflow"],
                             capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    return out


def _child(system: str, tree: Path, args: argparse.Namespace, tag: str) -> dict:
    """This benchmark on one system in a fresh process importing alflow from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--systems", system, "--work", str(args.work),
           "--baseline", "none", "--settings", args.settings] + (["--quick"] if args.quick
                                                                  else [])
    if "lj7" in system:
        cmd += ["--committee", str(lj7_committee(args.work, args.quick))]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        sys.exit(f"{tag} run of {system} failed:\n{res.stderr[-3000:]}")
    lines = res.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(f"{tag:>9} {line}", flush=True)
    return json.loads(lines[-1])[system]


def compare(args: argparse.Namespace) -> dict:
    """Each system on the baseline revision and on this checkout, one after the other (same
    machine state), and the ratios of their walker-step rates (wall and CPU time)."""
    base = _baseline_tree(args.baseline, args.work)
    out: dict = {}
    for system in args.systems.split(","):
        if system == "lj7_calls":  # compared in its own process: stacked against the loop
            out[system] = _child(system, ROOT, args, "this")
            continue
        load = os.getloadavg()[0]
        old = _child(system, base, args, args.baseline)
        new = _child(system, ROOT, args, "this")
        ratio = new["walker_steps_per_s"] / old["walker_steps_per_s"]
        cpu_ratio = new["walker_steps_per_cpu_s"] / old["walker_steps_per_cpu_s"]
        print(f"{system}: {new['walker_steps_per_s']:.0f} vs {old['walker_steps_per_s']:.0f} "
              f"walker-steps/s at {args.baseline}: x{ratio:.2f} (per CPU second "
              f"{new['walker_steps_per_cpu_s']:.0f} vs {old['walker_steps_per_cpu_s']:.0f}: "
              f"x{cpu_ratio:.2f}); load {load:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
        out[system] = {**new, "baseline": old, "ratio": round(ratio, 2),
                       "cpu_ratio": round(cpu_ratio, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer production iterations")
    ap.add_argument("--systems", default="lj7,ag6_emt,lj7_calls")
    ap.add_argument("--work", type=Path, default=Path("/tmp/alflow-bench-mcmc"),
                    help="cache of the trained lj7 committee and of the baseline's code")
    ap.add_argument("--settings", default="{}",
                    help="JSON object over the example's sampler.mcmc (walkers, local_steps, "
                    "...), e.g. the settings of an earlier example")
    ap.add_argument("--baseline", default=BASELINE,
                    help="git revision to compare with ('none': this checkout only)")
    ap.add_argument("--committee", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global COMMITTEE
    COMMITTEE = args.committee
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore", UserWarning)
    args.work.mkdir(parents=True, exist_ok=True)
    load0 = round(os.getloadavg()[0], 2)
    print(f"# alflow from {Path(alflow.__file__).parent}; load {load0:.2f}", flush=True)
    t0 = time.perf_counter()
    if "lj7" in args.systems:
        lj7_committee(args.work, args.quick)  # trained once, before any timing
    if args.baseline != "none":
        out = compare(args)
        out["baseline_revision"] = args.baseline
    else:
        benches = {"lj7": bench_lj7, "ag6_emt": bench_ag6_emt,
               "lj7_calls": lambda w, q, _s: committee_calls(lj7_committee(w, q), q)}
        settings = json.loads(args.settings)
        out = {n: benches[n](args.work, args.quick, settings) for n in args.systems.split(",")}
    out["quick"] = args.quick
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average"] = [load0, round(os.getloadavg()[0], 2)]  # at the start and the end
    out["commit"] = _commit()
    sys.stdout.flush()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
