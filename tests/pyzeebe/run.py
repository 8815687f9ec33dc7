#!/usr/bin/env python3
"""Runs the pyzeebe interop scenarios against a running Sluice gateway and reports each one.

Usage (scripts/pyzeebe.sh does all of this against a fresh `sluice dev`):
    SLUICE_GATEWAY=127.0.0.1:26500 python tests/pyzeebe/run.py [--wait-ready SECONDS]
        [--watch-pid PID] [SCENARIO ...]

--wait-ready polls the gateway's Topology with pyzeebe until the cluster is whole (3 brokers,
every partition with one leader) or the deadline passes; --watch-pid gives up at once when that
process (`sluice dev`) exits. Without SCENARIO names every scenario runs. Each scenario has its
own deadline. Prints one line per scenario with its time; exits 1 if any failed or was skipped,
2 if the gateway never became ready.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import traceback

import scenarios
from pyzeebe import ZeebeClient, create_insecure_channel
from pyzeebe.errors import PyZeebeError

SCENARIO_TIMEOUT_S = 60.0
PROBE_RPC_TIMEOUT_S = 2.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by the shell) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


async def wait_ready(gateway: str, timeout_s: float, watch_pid: int | None) -> bool:
    """Polls Topology until the cluster looks whole; prints the last problem on timeout."""
    started = time.monotonic()
    last_problem = "no answer yet"
    channel = create_insecure_channel(grpc_address=gateway)
    client = ZeebeClient(channel, max_connection_retries=-1)
    try:
        while time.monotonic() - started < timeout_s:
            if watch_pid is not None and not process_alive(watch_pid):
                print(f"ready: process {watch_pid} (sluice dev) exited while waiting", flush=True)
                return False
            try:
                topology = await asyncio.wait_for(client.topology(), PROBE_RPC_TIMEOUT_S)
                problems = scenarios.topology_problems(topology)
                if not problems:
                    print(f"ready: gateway {gateway} after {time.monotonic() - started:.1f} s", flush=True)
                    return True
                last_problem = "; ".join(problems)
            except Exception as error:  # not listening yet, or no leader yet
                last_problem = f"{type(error).__name__}: {error}".splitlines()[0]
            await asyncio.sleep(0.25)
    finally:
        await channel.close()
    print(f"ready: gateway {gateway} not ready after {timeout_s:.0f} s; last: {last_problem}", flush=True)
    return False


async def run_all(gateway: str, names: list[str]) -> bool:
    ctx = scenarios.Context(gateway)
    outcomes: dict[str, str] = {}
    total_started = time.monotonic()
    try:
        for scenario in scenarios.SCENARIOS:
            name = scenario.__name__
            if names and name not in names:
                continue
            needed = scenarios.NEEDS.get(name)
            if needed is not None and outcomes.get(needed, "pass") != "pass":
                outcomes[name] = "skip"
                print(f"SKIP {name}: needs {needed}, which did not pass", flush=True)
                continue
            started = time.monotonic()
            try:
                summary = await asyncio.wait_for(scenario(ctx), SCENARIO_TIMEOUT_S)
                outcomes[name] = "pass"
                print(f"PASS {name} ({time.monotonic() - started:.2f} s): {summary}", flush=True)
            except Exception as error:
                outcomes[name] = "fail"
                elapsed_s = time.monotonic() - started
                if isinstance(error, TimeoutError) and elapsed_s >= SCENARIO_TIMEOUT_S:
                    reason = f"no result within {SCENARIO_TIMEOUT_S:.0f} s"
                else:
                    reason = f"{type(error).__name__}: {error}"
                print(f"FAIL {name} ({elapsed_s:.2f} s): {reason}", flush=True)
                if not isinstance(error, (scenarios.ScenarioFailed, PyZeebeError, TimeoutError)):
                    traceback.print_exc()
    finally:
        await ctx.close()
    passed = sum(1 for outcome in outcomes.values() if outcome == "pass")
    print(
        f"pyzeebe interop: {passed} of {len(outcomes)} scenarios passed in {time.monotonic() - total_started:.2f} s",
        flush=True,
    )
    return bool(outcomes) and passed == len(outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wait-ready", type=float, metavar="SECONDS", help="wait for the cluster first")
    parser.add_argument("--watch-pid", type=int, metavar="PID", help="stop waiting when PID exits")
    parser.add_argument("names", nargs="*", metavar="SCENARIO", help="scenarios to run (default: all)")
    args = parser.parse_args()
    # pyzeebe logs failed jobs and lost connections as warnings; keep them, marked as its own.
    logging.basicConfig(level=logging.WARNING, format="    [%(name)s] %(levelname)s %(message)s")
    gateway = os.environ.get("SLUICE_GATEWAY")
    if not gateway:
        parser.error("set SLUICE_GATEWAY to the gateway's host:port")
    known = [s.__name__ for s in scenarios.SCENARIOS]
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {known}")
    return asyncio.run(run(gateway, args))


async def run(gateway: str, args: argparse.Namespace) -> int:
    if args.wait_ready is not None and not await wait_ready(gateway, args.wait_ready, args.watch_pid):
        return 2
    return 0 if await run_all(gateway, args.names) else 1


if __name__ == "__main__":
    sys.exit(main())
