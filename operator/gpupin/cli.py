"""The ``gpupin`` command.

``gpupin plan`` shows where deployments would go without a cluster. Exit codes: 0 all
placed, 1 any refused, 2 invalid input (one line on stderr naming the file and the field, and
what is allowed), 3 gpupin itself failed: a bug, reported in one line; ``--debug`` (or
``GPUPIN_DEBUG=1``) shows its traceback. The long-running commands (``operator``, ``agent``)
keep Python's traceback for their logs; ``gpupin operator`` exits 4 when it lost its Lease (its
pod restarts and waits as a standby).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NoReturn

from gpupin import __version__, clitools, inventorycli, modelcli
from gpupin.engines import ENGINES
from gpupin.kernel.state import NOT_FROZEN, Frozen
from gpupin.loading import STDIN, InputError, load_deployments, load_inventory, shown
from gpupin.packing import plan_all
from gpupin.pinning import PINNING_MODES
from gpupin.planner import Planner
from gpupin.planoutput import write_plan
from gpupin.render import RenderConfig

if TYPE_CHECKING:
    from gpupin.controller.config import OperatorConfig
    from gpupin.controller.lease import LeaderLease
    from gpupin.inventory import Inventory
    from gpupin.placement import Hold

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_INTERNAL = 3
EXIT_LEASE_LOST = 4
EXIT_INTERRUPTED = 130
_DAEMONS = ("operator", "agent", "router")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``gpupin`` command; returns its exit status (see the module's docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        return int(args.run(args))
    except InputError as exc:
        message = re.sub(r"\s*\n\s*", " ", str(exc))  # one line, whatever a message held
        print(f"gpupin: {message}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:  # `gpupin plan … | head`
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug or os.environ.get("GPUPIN_DEBUG", "") not in ("", "0") or args.command in _DAEMONS:
            raise
        print(f"gpupin: {internal_error(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


def internal_error(exc: BaseException) -> str:
    """One line for an exception gpupin did not expect: what, where, and how to see more."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    message = re.sub(r"\s+", " ", str(exc)).strip()[:300]
    return (
        f"internal error (a bug in gpupin): {type(exc).__name__}{': ' + message if message else ''}{where}; "
        "run it again with --debug for the traceback, and report it"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Usage errors are invalid input: exit 2 with one line naming the problem."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"gpupin: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpupin", description="Place LLM servers on the right GPU of mixed-GPU Kubernetes nodes."
    )
    parser.add_argument("--version", action="version", version=f"gpupin {__version__}")
    modelcli.add_debug_argument(parser, default=False)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    plan = sub.add_parser(
        "plan",
        help="show where LLMDeployments would be placed, without a cluster",
        description="Plan the LLMDeployments in the files together, placing as many as fit whatever their order. "
        "Exit 0 when all are placed, 1 when any is refused, 2 on invalid input, 3 on an internal error.",
    )
    plan.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file with LLMDeployments (repeatable; - reads standard input)",
    )
    plan.add_argument(
        "--inventory",
        metavar="FILE",
        help="GPU inventory file, or the output of `kubectl get nodes -o yaml` (- reads standard input)",
    )
    plan.add_argument(
        "--cluster",
        action="store_true",
        help="instead of --inventory: plan against a live cluster's GPUs and the pods already on them "
        "(read-only; --kubeconfig, --context)",
    )
    clitools.add_cluster_arguments(plan)
    plan.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table",
        help="table (default), json (plans and manifests) or yaml (the manifests)",
    )
    plan.add_argument(
        "--pinning",
        choices=PINNING_MODES,
        default="visible-devices",
        help="how pods are pinned to their GPUs (default visible-devices)",
    )
    plan.add_argument(
        "--runtime-class",
        default=RenderConfig.runtime_class_name,
        metavar="NAME",
        help="runtimeClassName for visible-devices pinning (default %(default)s; '' for none)",
    )
    modelcli.add_metadata_arguments(plan)
    modelcli.add_debug_argument(plan)
    plan.add_argument("--ollama-image", default=ENGINES.get("ollama").default_image, metavar="IMAGE")
    plan.add_argument("--vllm-image", default=ENGINES.get("vllm").default_image, metavar="IMAGE")
    from gpupin.controller import admin

    admin.add_arguments(plan)  # the cluster admin's policy, as the operator applies it
    plan.set_defaults(run=_plan)

    modelcli.add_models_command(sub)

    crd = sub.add_parser(
        "crd", help="print the LLMDeployment CustomResourceDefinition (for kubectl apply -f -)"
    )
    modelcli.add_debug_argument(crd)
    crd.set_defaults(run=_crd)

    operator = sub.add_parser(
        "operator",
        help="run the operator against the cluster of the current kubeconfig (or in-cluster)",
        description="Reconcile LLMDeployments into GPU-pinned pods. Every flag has an environment variable.",
    )
    from gpupin.controller import config as operator_config

    operator_config.add_arguments(operator)
    clitools.add_cluster_arguments(operator)
    operator.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    operator.add_argument(
        "--log-format",
        default="auto",
        choices=("auto", "json", "console"),
        help="auto: JSON when stderr is not a terminal",
    )
    operator.set_defaults(run=_operator)

    agent = sub.add_parser(
        "agent",
        help="publish this node's GPUs (NVML, or --fake-inventory) on its Node object",
        description="Read the node's GPUs and keep the gpupin.dev/gpu-inventory annotation and the "
        "gpupin.dev/gpu-count and gpupin.dev/mixed labels of its own Node current.",
    )
    inventorycli.source_arguments(agent)
    clitools.add_cluster_arguments(agent)
    agent.add_argument(
        "--interval",
        type=float,
        default=float(os.environ.get("GPUPIN_AGENT_INTERVAL", "60")),
        help="seconds between checks (env GPUPIN_AGENT_INTERVAL; default 60)",
    )
    agent.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ.get("GPUPIN_AGENT_HEALTH_PORT", "8081")),
        help="port of /healthz and /readyz, 0 to disable (env GPUPIN_AGENT_HEALTH_PORT; default 8081)",
    )
    agent.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("GPUPIN_AGENT_METRICS_PORT", "9402")),
        help="port of Prometheus /metrics, 0 to disable (env GPUPIN_AGENT_METRICS_PORT; default 9402)",
    )
    agent.add_argument("--once", action="store_true", help="read and publish once, then exit")
    agent.set_defaults(run=_agent)

    router = sub.add_parser(
        "router",
        help="serve one endpoint for an LLMDeployment's models, routed by the request's model name",
        description="Forward each request to a ready server of the model its body names; listings "
        "answer the union. Every flag has an environment variable.",
    )
    from gpupin.router import main as router_main

    router_main.add_arguments(router)
    router.set_defaults(run=router_main.run)

    inventorycli.add_inventory_command(sub)
    clitools.add_version_command(sub)
    clitools.add_completion_command(sub, parser)
    return parser


def _agent(args: argparse.Namespace) -> int:
    import signal
    import threading

    from gpupin import logs
    from gpupin.agent.publish import Agent, serve_health
    from gpupin.kube import Kube

    clitools.connect(args, "agent")
    logs.configure()
    agent = Agent(Kube(), inventorycli.source(args), args.node_name, args.interval)
    if not args.once:
        agent.metrics.serve(args.metrics_port)
    if args.health_port:
        serve_health(args.health_port, agent.healthy)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent.run(stop, once=args.once)
    return EXIT_OK


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from gpupin import logs
    from gpupin.controller import config as operator_config
    from gpupin.controller import handlers, liveness, metrics

    try:
        config = operator_config.from_arguments(args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    clitools.connect(args, "operator")
    logs.configure(args.log_level, None if args.log_format == "auto" else args.log_format == "json")
    identity = operator_config.operator_identity()
    if config.health_port:  # gpupin's own /healthz, standby and writer alike (see controller/liveness.py)
        liveness.serve(config.health_port)
    metrics.serve(config.metrics_port)  # a standby is a scrape target too: it says it holds no Lease
    held = _hold_lease(config, identity) if config.leader_election else None
    if held is False:
        return EXIT_OK  # stopped while a standby
    handlers.configure(config, write_budget=held.write_budget if held else None)
    try:
        kopf.run(
            standalone=True,  # kopf's own peering is not needed: the Lease makes one writer
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        )
    finally:
        if held:
            held.release()
    if held and held.lost.is_set():
        print("gpupin operator: lost its Lease; stopped (a restart waits as a standby)", file=sys.stderr)
        return EXIT_LEASE_LOST
    return EXIT_OK


def _hold_lease(config: OperatorConfig, identity: str) -> LeaderLease | Literal[False]:
    """Wait for the operator Lease: the held
    :class:`~gpupin.controller.lease.LeaderLease`, renewed from now on, or False when SIGTERM or
    SIGINT came first. Raises InputError when the API server refuses the Lease outright."""
    import os
    import signal
    import threading

    from gpupin.controller.lease import LeaderLease, LeaseLost, LeaseTiming
    from gpupin.controller.liveness import LIVENESS
    from gpupin.kube import Kube

    lease = LeaderLease(
        Kube(), config.lease_namespace, config.lease_name, identity,
        LeaseTiming.scaled(config.lease_duration_seconds),
    )  # fmt: skip
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    LIVENESS.phase = "standby"
    try:
        if not lease.acquire(stop):
            return False
    except LeaseLost as exc:
        raise InputError(str(exc)) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    LIVENESS.phase = "starting"
    lease.keep(on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))  # kopf stops as on SIGTERM
    return lease


def _crd(args: argparse.Namespace) -> int:
    from gpupin.api import crdgen

    sys.stdout.write(crdgen.render())
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    """``gpupin plan``, with Python's cyclic garbage collector off while it runs: reading, planning
    and rendering a large set allocate millions of dicts and lists, none of them garbage in a cycle
    that matters for a command that exits when done, and the collector's passes over them took a
    fifth of the run (``make bench-cli``). Reference counting still frees everything else."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _plan_uncollected(args)
    finally:
        if enabled:
            gc.enable()


def _cluster_state(args: argparse.Namespace, planned: set[str]) -> tuple[Inventory, list[Hold], Frozen]:
    """The live cluster's planning inventory and what its pods hold, less the pods of the
    deployments being planned (they are planned afresh, as if replaced). InputError when it
    cannot be read."""
    from gpupin.controller.snapshot import read_cluster
    from gpupin.kube import ApiError, Kube

    clitools.connect(args, "plan")
    try:
        found = read_cluster(Kube())
    except ApiError as exc:
        raise InputError(f"--cluster: cannot read the cluster: {exc}") from None
    for node, problem in sorted(found.problems.items()):
        print(f"gpupin: warning: --cluster: node {node}: {problem}", file=sys.stderr)
    holds = [h for h in found.holds if h.owner not in planned]
    print(
        f"gpupin: --cluster: {len(found.inventory.nodes)} node(s), {sum(len(n.gpus) for n in found.inventory.nodes)} "
        f"GPU(s); {found.pods} pod(s) of {found.deployments} LLMDeployment(s) in place, "
        f"{len({h.uuid for h in holds})} GPU(s) held by deployments not in the files",
        file=sys.stderr,
    )
    return found.inventory, holds, found.frozen


def _plan_uncollected(args: argparse.Namespace) -> int:
    if args.filename.count(STDIN) > 1:
        raise InputError("-f -: given twice; standard input can be read only once")
    if STDIN in args.filename and args.inventory == STDIN:
        raise InputError("-f - and --inventory -: standard input can be read only once; name a file for one")
    if bool(args.inventory) == bool(args.cluster):
        raise InputError(
            "gpupin plan: give --inventory FILE or --cluster (the GPUs to plan on), one of the two"
        )
    deployments = load_deployments(args.filename)
    holds: list[Hold] = []
    frozen = NOT_FROZEN
    if args.cluster:
        inventory, holds, frozen = _cluster_state(args, {d.key for d in deployments})
    else:
        inventory, problems = load_inventory(args.inventory)
        for problem in problems:
            print(f"gpupin: warning: {shown(args.inventory)}: skipped {problem}", file=sys.stderr)
    from gpupin.controller.config import for_plan

    try:
        operator = for_plan(args)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    config = operator.render
    engines = modelcli.engines_for(args, [d.spec for d in deployments])
    planner = Planner(inventory, pinning=args.pinning, engines=engines, policy=operator.policy, frozen=frozen)
    planner.hold(holds)
    seen: set[str] = set()
    for deployment in deployments:
        if deployment.key in seen:
            raise InputError(
                f"LLMDeployment {deployment.key} appears twice in {', '.join(map(shown, args.filename))}"
            )
        seen.add(deployment.key)
    results = list(zip(deployments, plan_all(planner, deployments), strict=True))
    write_plan(results, args.output, config, sys.stdout)
    return EXIT_OK if all(result.placed for _, result in results) else EXIT_REFUSED
