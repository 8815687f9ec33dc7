#!/usr/bin/env node
'use strict';
/**
 * Runs the @camunda8/sdk interop scenarios against a running Sluice gateway and reports each one.
 *
 * Usage (scripts/node-clients.sh does all of this against a fresh `sluice dev`):
 *     SLUICE_GATEWAY=127.0.0.1:26500 node tests/camunda-sdk/run.js [--wait-ready SECONDS]
 *         [--watch-pid PID] [SCENARIO ...]
 *
 * The SDK talks to the gateway through a loopback relay (wire.js) that checks every gRPC request
 * message went gzip-compressed; the last scenario asserts that. --wait-ready polls Topology with
 * the SDK until the cluster is whole (3 brokers, one leader per partition) or the deadline passes;
 * --watch-pid gives up at once when that process (`sluice dev`) exits. Without SCENARIO names every
 * scenario runs. Prints one line per scenario with its time and a closing "N passed, N failed"
 * line; exits 1 if any scenario failed or was skipped, 2 if the gateway never became ready.
 */

const fs = require('node:fs');

// The SDK reads ZEEBE_* and CAMUNDA_* from the environment when it is loaded; the run must not
// pick up a developer's cloud credentials or addresses, so only the explicit config below counts.
for (const name of Object.keys(process.env)) {
  if (name.startsWith('ZEEBE_') || name.startsWith('CAMUNDA_')) delete process.env[name];
}

const { Camunda8 } = require('@camunda8/sdk');
const { startGzipTap } = require('./wire');
const scenarios = require('./scenarios');

const SCENARIO_TIMEOUT_MS = 60_000;
const PROBE_RPC_TIMEOUT_MS = 2_000;
const PROBE_INTERVAL_MS = 250;

function parseArgs(argv) {
  const args = { waitReadyS: null, watchPid: null, names: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--wait-ready') args.waitReadyS = Number(argv[++i]);
    else if (arg === '--watch-pid') args.watchPid = Number(argv[++i]);
    else if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`);
    else args.names.push(arg);
  }
  if (args.waitReadyS !== null && !(args.waitReadyS > 0)) throw new Error('--wait-ready needs a number of seconds');
  if (args.watchPid !== null && !Number.isInteger(args.watchPid)) throw new Error('--watch-pid needs a process id');
  return args;
}

function processAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return error.code === 'EPERM';
  }
  // A zombie (exited, not yet reaped by the shell) still answers kill(0).
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return true;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function withTimeout(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new scenarios.ScenarioFailed(`${what}: no result within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function waitReady(zbc, gateway, timeoutS, watchPid) {
  const started = Date.now();
  let lastProblem = 'no answer yet';
  while (Date.now() - started < timeoutS * 1000) {
    if (watchPid !== null && !processAlive(watchPid)) {
      console.log(`ready: process ${watchPid} (sluice dev) exited while waiting`);
      return false;
    }
    try {
      const topology = await withTimeout(zbc.topology(), PROBE_RPC_TIMEOUT_MS, 'Topology');
      const problems = scenarios.topologyProblems(topology);
      if (problems.length === 0) {
        console.log(`ready: gateway ${gateway} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return true;
      }
      lastProblem = problems.join('; ');
    } catch (error) {
      lastProblem = scenarios.describeError(error).split('\n')[0];
    }
    await sleep(PROBE_INTERVAL_MS);
  }
  console.log(`ready: gateway ${gateway} not ready after ${timeoutS} s; last: ${lastProblem}`);
  return false;
}

async function runAll(ctx, names) {
  const outcomes = new Map();
  const totalStarted = Date.now();
  for (const scenario of scenarios.SCENARIOS) {
    const name = scenario.name;
    if (names.length > 0 && !names.includes(name)) continue;
    const needed = scenarios.NEEDS[name];
    if (needed !== undefined && (outcomes.get(needed) ?? 'pass') !== 'pass') {
      outcomes.set(name, 'skip');
      console.log(`SKIP ${name}: needs ${needed}, which did not pass`);
      continue;
    }
    const started = Date.now();
    const elapsed = () => ((Date.now() - started) / 1000).toFixed(2);
    try {
      const summary = await withTimeout(scenario(ctx), SCENARIO_TIMEOUT_MS, name);
      outcomes.set(name, 'pass');
      console.log(`PASS ${name} (${elapsed()} s): ${summary}`);
    } catch (error) {
      outcomes.set(name, 'fail');
      const known = error instanceof scenarios.ScenarioFailed || typeof error.code === 'number';
      console.log(`FAIL ${name} (${elapsed()} s): ${known ? scenarios.describeError(error) : error.stack}`);
    }
  }
  const counts = { pass: 0, fail: 0, skip: 0 };
  for (const outcome of outcomes.values()) counts[outcome] += 1;
  console.log(`camunda-sdk: scenarios took ${((Date.now() - totalStarted) / 1000).toFixed(2)} s`);
  console.log(`camunda-sdk: ${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped`);
  return outcomes.size > 0 && counts.pass === outcomes.size;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const gateway = process.env.SLUICE_GATEWAY;
  if (!gateway || !/^127\.0\.0\.1:\d+$/.test(gateway)) {
    throw new Error('set SLUICE_GATEWAY to the gateway as 127.0.0.1:PORT');
  }
  const known = scenarios.SCENARIOS.map((s) => s.name);
  const unknown = args.names.filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new Error(`unknown scenarios ${unknown.join(', ')}; known: ${known.join(', ')}`);

  const tap = await startGzipTap(Number(gateway.split(':')[1]));
  const c8 = new Camunda8({
    // grpc:// is the SDK's plaintext scheme; it overrides ZEEBE_INSECURE_CONNECTION and
    // CAMUNDA_SECURE_CONNECTION. Everything else about the channel, gzip included, is the SDK's.
    ZEEBE_GRPC_ADDRESS: `grpc://127.0.0.1:${tap.port}`,
    CAMUNDA_AUTH_STRATEGY: 'NONE',
    zeebeGrpcSettings: {
      // The SDK retries UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED forever by default;
      // here every RPC is one attempt, so any such answer is reported, not hidden.
      ZEEBE_GRPC_CLIENT_RETRY: false,
      ZEEBE_CLIENT_LOG_LEVEL: 'ERROR',
    },
  });
  const zbc = c8.getZeebeGrpcApiClient();
  let ok = false;
  let status = 1;
  try {
    if (args.waitReadyS !== null && !(await waitReady(zbc, gateway, args.waitReadyS, args.watchPid))) {
      status = 2;
    } else {
      ok = await runAll({ zbc, tap, deployed: new Set() }, args.names);
      status = ok ? 0 : 1;
    }
  } finally {
    await withTimeout(c8.closeAllClients(), 10_000, 'closing the SDK clients').catch((error) =>
      console.log(`closing the SDK clients: ${error.message}`),
    );
    await tap.close();
  }
  return status;
}

main().then(
  (status) => process.exit(status),
  (error) => {
    console.log(`camunda-sdk: ${error.stack ?? error}`);
    process.exit(1);
  },
);
