"""``gpupin router``: its flags, and the process that serves them.

Every flag has an environment variable (the router's Deployment sets those). Exit status 2 when
the routes file cannot be used at start (the message names the file and field); once serving, a
bad change of the file is logged and the last good routes stay.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the router runs: `gpupin plan` builds this parser too
    from gpupin.router.proxy import Router
    from gpupin.router.source import RoutesFollower


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--routes",
        default=env("GPUPIN_ROUTES"),
        required=not env("GPUPIN_ROUTES"),
        metavar="FILE",
        help="the routes file: the engine and its servers (env GPUPIN_ROUTES; read again when it changes)",
    )
    parser.add_argument(
        "--port", type=int, default=int(env("GPUPIN_ROUTER_PORT", "8080")),
        help="port of the engine's API (env GPUPIN_ROUTER_PORT; default 8080)",
    )  # fmt: skip
    parser.add_argument(
        "--management-port", type=int, default=int(env("GPUPIN_ROUTER_MANAGEMENT_PORT", "9090")),
        help="port of /healthz, /readyz and /metrics (env GPUPIN_ROUTER_MANAGEMENT_PORT; default 9090)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-timeout", type=float, default=float(env("GPUPIN_ROUTER_CONNECT_TIMEOUT", "5")),
        help="seconds to reach a server before trying another (default 5)",
    )  # fmt: skip
    parser.add_argument("--log-level", default=env("GPUPIN_LOG_LEVEL", "INFO"),
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT. Raises :class:`~gpupin.loading.InputError` when the routes
    file cannot be used at start."""
    import asyncio

    from gpupin import logs
    from gpupin.loading import InputError
    from gpupin.router.proxy import Router
    from gpupin.router.source import RoutesError, RoutesFollower, read_routes

    logs.configure(args.log_level)
    try:
        table = read_routes(args.routes)
    except RoutesError as exc:
        raise InputError(str(exc)) from None
    router = Router(table, connect_timeout=args.connect_timeout)
    asyncio.run(serve(router, RoutesFollower(args.routes, router), args.port, args.management_port))
    return 0


async def serve(router: Router, follower: RoutesFollower, port: int, management_port: int) -> None:
    """Serve the API on ``port`` and health and metrics on ``management_port`` (all interfaces)
    until SIGTERM or SIGINT; the routes file is followed meanwhile."""
    import asyncio
    import signal

    from aiohttp import web

    from gpupin import logs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # no access log: a line per request would cost more than the routing (metrics count them)
    runners = [
        # a client that goes away cancels its request upstream too (Ollama then stops generating)
        web.AppRunner(router.app(), access_log=None, handler_cancellation=True),
        web.AppRunner(router.management_app(), access_log=None),
    ]
    for runner, listen in zip(runners, (port, management_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", listen).start()
    following = asyncio.create_task(follower.follow())
    logs.get("gpupin.router").info("Router serving", port=port, management_port=management_port, engine=router.table.engine,
             models=router.table.models, servers=len(router.table.backends))  # fmt: skip
    try:
        await stop.wait()
    finally:
        following.cancel()
        for runner in reversed(runners):
            await runner.cleanup()
