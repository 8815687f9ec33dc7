#!/usr/bin/env node
'use strict';
/**
 * Interop scenarios for zbctl 8.4.1 (npm package `zbctl`: the Go CLI built from Zeebe's client)
 * against Sluice's gRPC gateway, driven through the CLI exactly as an operator types it, with exit
 * codes and printed JSON checked.
 *
 * Usage (scripts/node-clients.sh does all of this against a fresh `sluice dev`):
 *     SLUICE_GATEWAY=127.0.0.1:26500 node tests/zbctl/run.js [--wait-ready SECONDS]
 *         [--watch-pid PID] [SCENARIO ...]
 *
 * The Go binary `node_modules/zbctl/bin/zbctl-cli.linux` is run directly: the package's `zbctl`
 * Node wrapper only forwards to it, and after every command asks the npm registry for a newer
 * version, which a test must not do (traffic here goes to 127.0.0.1 only).
 *
 * Each scenario is `async function name(ctx) -> string` that throws `ScenarioFailed` with what was
 * expected and what came back, or returns a one-line summary. Each has a deadline; one listed in
 * `NEEDS` is skipped when the one it needs did not pass. Prints one line per scenario and a closing
 * "N passed, N failed" line; exits 1 if any failed or was skipped, 2 if the gateway never became
 * ready.
 *
 * Known broker bug this file does NOT paper over: right after a deployment, a creation routed to a
 * partition the deployment has not reached yet may be rejected NOT_FOUND. Creations here run at
 * once, without retry, and such a rejection fails the scenario with a message naming that bug.
 */

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');
const ONE_TASK_BPMN = path.join(REPO, 'engine/testdata/bpmn/one_task.bpmn');
const MESSAGES_BPMN = path.join(REPO, 'engine/testdata/bpmn/messages.bpmn');
const HANDLER = path.join(__dirname, 'handler.sh');

const BROKERS = 3;
const PARTITIONS = 3;
const REPLICATION_FACTOR = 3;
const INSTANCES_WITHOUT_RESULT = 6; // round-robin: two per partition
const INSTANCES_WITH_RESULT = 3;

// Every wait has a deadline. zbctl's own --requestTimeout bounds each RPC; the process deadline
// is a backstop above it.
const COMMAND_DEADLINE_MS = 20_000;
const RESULT_REQUEST_TIMEOUT = '20s'; // zbctl --requestTimeout for `create instance --withResult`
const RESULT_COMMAND_DEADLINE_MS = 30_000;
const JOBS_DONE_TIMEOUT_MS = 30_000;
const WORKER_STOP_TIMEOUT_MS = 5_000;
const SCENARIO_TIMEOUT_MS = 60_000;
const PROBE_INTERVAL_MS = 250;
const PROBE_REQUEST_TIMEOUT = '2s';

class ScenarioFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new ScenarioFailed(message);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function zbctlBinary() {
  check(process.platform === 'linux' && process.arch === 'x64', `zbctl ships a linux-x64 binary; this is ${process.platform}-${process.arch}`);
  const pkg = require.resolve('zbctl/package.json', { paths: [__dirname] });
  return path.join(path.dirname(pkg), 'bin', 'zbctl-cli.linux');
}

/** The environment for zbctl: none of a developer's ZEEBE_* settings (address, OAuth). */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('ZEEBE_')) env[name] = value;
  }
  return { ...env, ...extra };
}

function quoteArgs(args) {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/** Starts `zbctl --insecure --address GATEWAY ARGS`; returns the child and a promise of its end. */
function startZbctl(ctx, args, { deadlineMs, env } = {}) {
  const fullArgs = ['--insecure', '--address', ctx.gateway, ...args];
  const child = spawn(ctx.binary, fullArgs, { env: env ?? cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  let timedOut = false;
  const timer = deadlineMs
    ? setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, deadlineMs)
    : null;
  const done = new Promise((resolve) => {
    const finish = (code, signal, spawnError) => {
      if (timer) clearTimeout(timer);
      resolve({ command: `zbctl ${quoteArgs(args)}`, code, signal, stdout, stderr, timedOut, spawnError });
    };
    child.on('error', (error) => finish(null, null, error));
    child.on('close', (code, signal) => finish(code, signal));
  });
  return { child, done, output: () => ({ stdout, stderr }) };
}

function zbctl(ctx, args, deadlineMs = COMMAND_DEADLINE_MS) {
  return startZbctl(ctx, args, { deadlineMs }).done;
}

function describeRun(run) {
  if (run.spawnError) return `${run.command}: could not start: ${run.spawnError.message}`;
  const how = run.timedOut ? 'killed at its deadline' : run.signal ? `killed by ${run.signal}` : `exit ${run.code}`;
  const stderr = run.stderr.trim().split('\n').slice(-3).join(' | ');
  return `${run.command}: ${how}${stderr ? `; stderr: ${stderr}` : ''}`;
}

/** The JSON a successful command printed. */
function expectJson(run) {
  check(run.code === 0, describeRun(run));
  try {
    return JSON.parse(run.stdout);
  } catch (error) {
    throw new ScenarioFailed(`${run.command}: exit 0 but stdout is not JSON (${error.message}): ${JSON.stringify(run.stdout.slice(0, 300))}`);
  }
}

/** zbctl prints a failed RPC as "Error: rpc error: code = NotFound desc = ..." and exits 1. */
function grpcCodeOf(run) {
  const match = /rpc error: code = (\w+) desc = (.*)/.exec(run.stderr);
  return match ? { code: match[1], desc: match[2].trim() } : null;
}

function expectGrpcError(run, codeName) {
  check(run.code !== 0, `${run.command}: expected gRPC ${codeName}, but it succeeded: ${run.stdout.trim()}`);
  const error = grpcCodeOf(run);
  check(error !== null, `${run.command}: expected gRPC ${codeName}, got ${describeRun(run)}`);
  check(error.code === codeName, `${run.command}: expected gRPC ${codeName}, got ${error.code}: ${error.desc}`);
  check(run.code === 1, `${run.command}: gRPC ${codeName} as expected, but exit code ${run.code} instead of 1`);
  return error;
}

/** A creation NOT_FOUND for a process just deployed is the known distribution bug; say so. */
function distributionMiss(ctx, run, processId) {
  const error = grpcCodeOf(run);
  return ctx.deployed.has(processId) && run.code !== 0 && error !== null && error.code === 'NotFound' && error.desc.includes(`'${processId}'`);
}

function expectCreated(ctx, runs, processId) {
  const misses = runs.filter((run) => distributionMiss(ctx, run, processId));
  const others = runs.filter((run) => run.code !== 0 && !distributionMiss(ctx, run, processId));
  const parts = [];
  if (misses.length > 0) {
    parts.push(
      `${misses.length} of ${runs.length} creations of ${processId} were rejected NOT_FOUND right after its ` +
        `deployment (known broker bug: deployment not yet distributed to the partition; not retried here): ` +
        misses.map(describeRun).join('; '),
    );
  }
  if (others.length > 0) parts.push(`${others.length} creations failed otherwise: ${others.map(describeRun).join('; ')}`);
  check(parts.length === 0, parts.join(' | '));
  return runs.map(expectJson);
}

function partitionOf(key) {
  return Number(BigInt(key) >> 51n);
}

function sameObject(actual, expected) {
  const canonical = (o) => JSON.stringify(o, Object.keys(o ?? {}).sort());
  return canonical(actual) === canonical(expected);
}

// --- 1. status (Topology) ---------------------------------------------------------------------

function topologyProblems(topology) {
  const problems = [];
  if (topology.clusterSize !== BROKERS) problems.push(`clusterSize ${topology.clusterSize}, expected ${BROKERS}`);
  if (topology.partitionsCount !== PARTITIONS) problems.push(`partitionsCount ${topology.partitionsCount}, expected ${PARTITIONS}`);
  if (topology.replicationFactor !== REPLICATION_FACTOR) {
    problems.push(`replicationFactor ${topology.replicationFactor}, expected ${REPLICATION_FACTOR}`);
  }
  const brokers = topology.brokers ?? [];
  // protojson leaves zero values out: a missing nodeId is node 0.
  const nodeIds = brokers.map((b) => b.nodeId ?? 0).sort((a, b) => a - b);
  const expectedIds = [...Array(BROKERS).keys()];
  if (JSON.stringify(nodeIds) !== JSON.stringify(expectedIds)) {
    problems.push(`brokers ${JSON.stringify(nodeIds)}, expected ${JSON.stringify(expectedIds)}`);
  }
  for (let pid = 1; pid <= PARTITIONS; pid += 1) {
    const replicas = brokers.flatMap((b) => (b.partitions ?? []).filter((p) => p.partitionId === pid).map((p) => ({ node: b.nodeId ?? 0, ...p })));
    const leaders = replicas.filter((p) => p.role === 'LEADER').map((p) => p.node);
    if (leaders.length !== 1) problems.push(`partition ${pid} has leaders ${JSON.stringify(leaders)}, expected exactly one`);
    if (replicas.length !== REPLICATION_FACTOR) problems.push(`partition ${pid} is on ${replicas.length} brokers, expected ${REPLICATION_FACTOR}`);
  }
  return problems;
}

function describeTopology(topology) {
  return [...(topology.brokers ?? [])]
    .sort((a, b) => (a.nodeId ?? 0) - (b.nodeId ?? 0))
    .map((b) => `node ${b.nodeId ?? 0} ${b.host}:${b.port} [${(b.partitions ?? []).map((p) => `p${p.partitionId}:${String(p.role).toLowerCase()}`).join(', ')}]`)
    .join('; ');
}

async function status(ctx) {
  const version = await zbctl(ctx, ['version']);
  check(version.code === 0, describeRun(version));
  const topology = expectJson(await zbctl(ctx, ['status', '--output', 'json']));
  const problems = topologyProblems(topology);
  check(problems.length === 0, `${problems.join('; ')} (topology: ${describeTopology(topology)})`);
  // The human-readable form an operator reads comes from the same RPC.
  const human = await zbctl(ctx, ['status']);
  check(human.code === 0 && /Cluster size: 3/.test(human.stdout), describeRun(human));
  return `${version.stdout.trim()}; gateway ${JSON.stringify(topology.gatewayVersion)}: ${describeTopology(topology)}`;
}

// --- 2. deploy --------------------------------------------------------------------------------

async function deploy(ctx) {
  const response = expectJson(await zbctl(ctx, ['deploy', ONE_TASK_BPMN, MESSAGES_BPMN]));
  const processes = response.processes ?? (response.deployments ?? []).map((d) => d.process).filter(Boolean);
  const byId = new Map(processes.map((p) => [p.bpmnProcessId, p]));
  const ids = [...byId.keys()].sort();
  check(
    JSON.stringify(ids) === JSON.stringify(['messages', 'one_task']),
    `deployed processes ${JSON.stringify(ids)}, expected ["messages","one_task"] (printed: ${JSON.stringify(response)})`,
  );
  check(BigInt(response.key ?? 0) > 0n, `deployment key ${response.key}`);
  for (const [id, file] of [['one_task', ONE_TASK_BPMN], ['messages', MESSAGES_BPMN]]) {
    const process = byId.get(id);
    check(process.version >= 1, `${id} has version ${process.version}`);
    check(BigInt(process.processDefinitionKey ?? 0) > 0n, `${id} has key ${process.processDefinitionKey}`);
    check(
      String(process.resourceName).endsWith(path.basename(file)),
      `${id} resource name ${JSON.stringify(process.resourceName)}, expected it to end in ${path.basename(file)}`,
    );
  }
  ids.forEach((id) => ctx.deployed.add(id));
  return `deployment ${response.key}: ${processes.map((p) => `${p.bpmnProcessId} v${p.version} key ${p.processDefinitionKey}`).join(', ')}`;
}

// --- 3. worker + instances with and without result --------------------------------------------

async function stopWorker(worker) {
  if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGINT');
  let timer;
  const stopped = await Promise.race([
    worker.done.then(() => true),
    new Promise((resolve) => (timer = setTimeout(() => resolve(false), WORKER_STOP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (!stopped) {
    worker.child.kill('SIGKILL');
    await worker.done;
  }
  return stopped;
}

async function workerAndInstances(ctx) {
  check(!/\s/.test(HANDLER), `zbctl splits --handler on spaces; the handler path has one: ${HANDLER}`);
  const handlerLog = path.join(ctx.workDir, 'handler.log');
  fs.writeFileSync(handlerLog, '');
  const worker = startZbctl(
    ctx,
    ['create', 'worker', 'work', '--handler', `sh ${HANDLER}`, '--name', 'zbctl-interop', '--pollInterval', '100ms', '--timeout', '60s'],
    { env: cleanEnv({ ZBCTL_HANDLER_LOG: handlerLog }) },
  );
  const total = INSTANCES_WITHOUT_RESULT + INSTANCES_WITH_RESULT;
  const handled = () => fs.readFileSync(handlerLog, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  const completed = () => [...worker.output().stderr.matchAll(/Handler completed job (\d+)/g)].map((m) => m[1]);
  let started;
  let results;
  let stoppedCleanly;
  try {
    const withoutResult = await Promise.all(
      [...Array(INSTANCES_WITHOUT_RESULT).keys()].map((n) =>
        zbctl(ctx, ['create', 'instance', 'one_task', '--variables', JSON.stringify({ n, tag: 'without-result' })]),
      ),
    );
    const withResult = await Promise.all(
      [...Array(INSTANCES_WITH_RESULT).keys()].map((n) =>
        zbctl(
          ctx,
          ['create', 'instance', 'one_task', '--withResult', '--requestTimeout', RESULT_REQUEST_TIMEOUT, '--variables', JSON.stringify({ n, tag: 'with-result' })],
          RESULT_COMMAND_DEADLINE_MS,
        ),
      ),
    );
    const created = expectCreated(ctx, [...withoutResult, ...withResult], 'one_task');
    started = created.slice(0, INSTANCES_WITHOUT_RESULT);
    results = created.slice(INSTANCES_WITHOUT_RESULT);
    const deadline = Date.now() + JOBS_DONE_TIMEOUT_MS;
    while (completed().length < total) {
      check(worker.child.exitCode === null, `the worker exited early: ${worker.output().stderr.trim()}`);
      check(Date.now() < deadline, `timed out after ${JOBS_DONE_TIMEOUT_MS / 1000} s waiting for ${total} completed jobs (have ${completed().length})`);
      await sleep(50);
    }
  } finally {
    stoppedCleanly = await stopWorker(worker);
  }
  const workerLog = worker.output().stderr;
  check(!/Unable to complete job|Failed to complete|Handler failed/i.test(workerLog), `the worker reported failures: ${workerLog.trim()}`);
  check(stoppedCleanly, `the worker did not stop within ${WORKER_STOP_TIMEOUT_MS / 1000} s of SIGINT`);

  results.forEach((result, n) => {
    const variables = JSON.parse(result.variables ?? '{}');
    const expected = { n, tag: 'with-result', done: true, worker: 'zbctl' };
    check(result.bpmnProcessId === 'one_task', `result ${n} is of ${JSON.stringify(result.bpmnProcessId)}`);
    check(sameObject(variables, expected), `instance ${result.processInstanceKey} finished with ${result.variables}, expected ${JSON.stringify(expected)}`);
  });
  const keys = [...started, ...results].map((r) => r.processInstanceKey);
  check(new Set(keys).size === total, `instance keys are not unique: ${keys.join(', ')}`);
  const served = handled();
  const servedTags = served.map((v) => `${v.tag}#${v.n}`).sort();
  const expectedTags = [
    ...[...Array(INSTANCES_WITHOUT_RESULT).keys()].map((n) => `without-result#${n}`),
    ...[...Array(INSTANCES_WITH_RESULT).keys()].map((n) => `with-result#${n}`),
  ].sort();
  check(JSON.stringify(servedTags) === JSON.stringify(expectedTags), `the handler served ${JSON.stringify(servedTags)}, expected each instance once: ${JSON.stringify(expectedTags)}`);
  const jobKeys = completed();
  check(new Set(jobKeys).size === total, `completed job keys ${jobKeys.join(', ')}, expected ${total} distinct`);

  // An instance whose only job completed is gone: cancelling it must be rejected NOT_FOUND.
  for (const instance of started) {
    expectGrpcError(await zbctl(ctx, ['cancel', 'instance', instance.processInstanceKey]), 'NotFound');
  }
  const partitions = [...new Set(keys.map(partitionOf))].sort();
  return (
    `worker completed ${total} jobs; ${INSTANCES_WITHOUT_RESULT} without result done (cancel then NotFound), ` +
    `${INSTANCES_WITH_RESULT} with result carried their input plus done/worker; instances on partitions ${JSON.stringify(partitions)}`
  );
}

// --- 4. message -------------------------------------------------------------------------------

async function message(ctx) {
  const orderId = 'zbctl-o-77';
  const instance = zbctl(
    ctx,
    ['create', 'instance', 'messages', '--withResult', '--requestTimeout', RESULT_REQUEST_TIMEOUT, '--variables', JSON.stringify({ orderId, region: 'eu' })],
    RESULT_COMMAND_DEADLINE_MS,
  );
  // A 60 s TTL, so the order against the instance's subscriptions does not matter.
  const published = [];
  for (const [name, variables] of [['payment', { amount: 5 }], ['shipment-eu', {}]]) {
    const response = expectJson(
      await zbctl(ctx, ['publish', 'message', name, '--correlationKey', orderId, '--ttl', '60s', '--variables', JSON.stringify(variables)]),
    );
    check(BigInt(response.key ?? 0) > 0n, `publish message ${name} printed ${JSON.stringify(response)}`);
    published.push(`${name} key ${response.key}`);
  }
  const [result] = expectCreated(ctx, [await instance], 'messages');
  const variables = JSON.parse(result.variables ?? '{}');
  // Only paid_amount reaches the process scope (output mapping), not the message's amount.
  const expected = { orderId, region: 'eu', paid_amount: 5 };
  check(sameObject(variables, expected), `instance ${result.processInstanceKey} finished with ${result.variables}, expected ${JSON.stringify(expected)}`);
  return `instance ${result.processInstanceKey} correlated ${published.join(' and ')}: ${result.variables}`;
}

// --- 5. cancel --------------------------------------------------------------------------------

async function cancel(ctx) {
  const [created] = expectCreated(
    ctx,
    [await zbctl(ctx, ['create', 'instance', 'messages', '--variables', JSON.stringify({ orderId: 'zbctl-never-paid', region: 'eu' })])],
    'messages',
  );
  const key = created.processInstanceKey;
  const first = await zbctl(ctx, ['cancel', 'instance', key]);
  check(first.code === 0, describeRun(first));
  check(first.stdout.includes(`Canceled process instance with key '${key}'`), `${first.command} printed ${JSON.stringify(first.stdout)}`);
  const second = expectGrpcError(await zbctl(ctx, ['cancel', 'instance', key]), 'NotFound');
  return `instance ${key} cancelled; the second cancel: exit 1, NotFound: ${second.desc}`;
}

// --- 6. error codes ---------------------------------------------------------------------------

async function errorCodes(ctx) {
  const unknown = 'zbctl_no_such_process';
  const plain = expectGrpcError(await zbctl(ctx, ['create', 'instance', unknown]), 'NotFound');
  expectGrpcError(await zbctl(ctx, ['create', 'instance', unknown, '--withResult']), 'NotFound');
  return `create instance of an unknown process: exit 1, NotFound: ${plain.desc}; with --withResult: NotFound too`;
}

const SCENARIOS = [status, deploy, workerAndInstances, message, cancel, errorCodes];
const NEEDS = { workerAndInstances: 'deploy', message: 'deploy', cancel: 'deploy' };

// --- runner -----------------------------------------------------------------------------------

function processAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return error.code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return true;
  }
}

async function waitReady(ctx, timeoutS, watchPid) {
  const started = Date.now();
  let lastProblem = 'no answer yet';
  while (Date.now() - started < timeoutS * 1000) {
    if (watchPid !== null && !processAlive(watchPid)) {
      console.log(`ready: process ${watchPid} (sluice dev) exited while waiting`);
      return false;
    }
    const run = await zbctl(ctx, ['status', '--output', 'json', '--requestTimeout', PROBE_REQUEST_TIMEOUT], 5_000);
    if (run.code === 0) {
      try {
        const problems = topologyProblems(JSON.parse(run.stdout));
        if (problems.length === 0) {
          console.log(`ready: gateway ${ctx.gateway} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
          return true;
        }
        lastProblem = problems.join('; ');
      } catch (error) {
        lastProblem = `status printed no JSON: ${error.message}`;
      }
    } else {
      lastProblem = describeRun(run);
    }
    await sleep(PROBE_INTERVAL_MS);
  }
  console.log(`ready: gateway ${ctx.gateway} not ready after ${timeoutS} s; last: ${lastProblem}`);
  return false;
}

async function runAll(ctx, names) {
  const outcomes = new Map();
  const totalStarted = Date.now();
  for (const scenario of SCENARIOS) {
    const name = scenario.name;
    if (names.length > 0 && !names.includes(name)) continue;
    const needed = NEEDS[name];
    if (needed !== undefined && (outcomes.get(needed) ?? 'pass') !== 'pass') {
      outcomes.set(name, 'skip');
      console.log(`SKIP ${name}: needs ${needed}, which did not pass`);
      continue;
    }
    const started = Date.now();
    const elapsed = () => ((Date.now() - started) / 1000).toFixed(2);
    let timer;
    try {
      const expired = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new ScenarioFailed(`no result within ${SCENARIO_TIMEOUT_MS / 1000} s`)), SCENARIO_TIMEOUT_MS);
      });
      const summary = await Promise.race([scenario(ctx), expired]);
      outcomes.set(name, 'pass');
      console.log(`PASS ${name} (${elapsed()} s): ${summary}`);
    } catch (error) {
      outcomes.set(name, 'fail');
      console.log(`FAIL ${name} (${elapsed()} s): ${error instanceof ScenarioFailed ? error.message : error.stack}`);
    } finally {
      clearTimeout(timer);
    }
  }
  const counts = { pass: 0, fail: 0, skip: 0 };
  for (const outcome of outcomes.values()) counts[outcome] += 1;
  console.log(`zbctl: scenarios took ${((Date.now() - totalStarted) / 1000).toFixed(2)} s`);
  console.log(`zbctl: ${counts.pass} passed, ${counts.fail} failed, ${counts.skip} skipped`);
  return outcomes.size > 0 && counts.pass === outcomes.size;
}

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
  const known = SCENARIOS.map((s) => s.name);
  const unknown = args.names.filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new Error(`unknown scenarios ${unknown.join(', ')}; known: ${known.join(', ')}`);
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const gateway = process.env.SLUICE_GATEWAY;
  if (!gateway || !/^127\.0\.0\.1:\d+$/.test(gateway)) throw new Error('set SLUICE_GATEWAY to the gateway as 127.0.0.1:PORT');
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-zbctl-'));
  const ctx = { gateway, binary: zbctlBinary(), workDir, deployed: new Set() };
  try {
    if (args.waitReadyS !== null && !(await waitReady(ctx, args.waitReadyS, args.watchPid))) return 2;
    return (await runAll(ctx, args.names)) ? 0 : 1;
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.log(`zbctl: ${error instanceof ScenarioFailed ? error.message : error.stack}`);
    process.exit(1);
  },
);
