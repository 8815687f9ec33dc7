"""Interop scenarios: pyzeebe 4.7.0, an unmodified Zeebe client, against Sluice's gRPC gateway.

Each scenario is `async def name(ctx: Context) -> str`: it raises `ScenarioFailed` (or lets a
pyzeebe error through) with a message saying what was expected and what came back, and returns a
one-line summary of what it checked. `run.py` runs them in the order of `SCENARIOS`; a scenario
listed in `NEEDS` is skipped when the one it needs did not pass.

What the incident scenario can and cannot see is written at `incident` below: Sluice has no
incident query API yet, so the incident is inferred from the job and instance behaviour a client
can observe.
"""

# No `from __future__ import annotations` here: pyzeebe finds a task's `job: Job` parameter by
# comparing the annotation with the class, and a postponed annotation is only the string "Job".
import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from pyzeebe import Job, JobController, ZeebeClient, ZeebeWorker, create_insecure_channel
from pyzeebe.errors import ProcessDefinitionNotFoundError, ProcessInstanceNotFoundError
from pyzeebe.proto.gateway_pb2 import ActivateJobsRequest, UpdateJobRetriesRequest
from pyzeebe.proto.gateway_pb2_grpc import GatewayStub

REPO = Path(__file__).resolve().parents[2]
ONE_TASK_BPMN = REPO / "engine/testdata/bpmn/one_task.bpmn"
MESSAGES_BPMN = REPO / "engine/testdata/bpmn/messages.bpmn"
FAIL_ALWAYS_BPMN = Path(__file__).resolve().parent / "fail_always.bpmn"

BROKERS = 3
PARTITIONS = 3
REPLICATION_FACTOR = 3

INSTANCES_WITHOUT_RESULT = 20
INSTANCES_WITH_RESULT = 5
FAIL_ALWAYS_RETRIES = 2  # zeebe:taskDefinition retries in fail_always.bpmn

# Every wait in a scenario has one of these deadlines; run.py bounds each scenario as a whole.
JOBS_DONE_TIMEOUT_S = 30.0
DISTRIBUTION_TIMEOUT_S = 10.0
RESULT_TIMEOUT_MS = 20_000
QUIET_PERIOD_S = 2.0  # how long a worker must see no further job before "no more jobs" holds
RAW_ACTIVATE_RPC_TIMEOUT_S = 10.0
LONG_POLL_REQUEST_TIMEOUT_MS = 1_000


class ScenarioFailed(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioFailed(message)


@dataclass
class Context:
    """What scenarios share: the gateway address and one client channel."""

    gateway: str
    channel: grpc.aio.Channel = field(init=False)
    client: ZeebeClient = field(init=False)

    def __post_init__(self) -> None:
        self.channel = create_insecure_channel(grpc_address=self.gateway)
        self.client = ZeebeClient(self.channel)

    def new_channel(self) -> grpc.aio.Channel:
        return create_insecure_channel(grpc_address=self.gateway)

    async def close(self) -> None:
        await self.channel.close()


async def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


async def until_distributed(create, what: str):
    """Runs `create()`, retrying while the process is unknown on the partition it reached.

    As in Zeebe, DeployResource answers once partition 1 has the deployment and distributes it
    to the other partitions afterwards; an instance created on one of them just after the deploy
    can be rejected NOT_FOUND for a moment. Real clients retry, and so does this, for a while.
    """
    deadline = time.monotonic() + DISTRIBUTION_TIMEOUT_S
    while True:
        try:
            return await create()
        except ProcessDefinitionNotFoundError:
            if time.monotonic() > deadline:
                raise ScenarioFailed(
                    f"{what}: process still unknown {DISTRIBUTION_TIMEOUT_S:.0f} s after its deployment"
                ) from None
            await asyncio.sleep(0.1)


class RunningWorker:
    """A ZeebeWorker working in a background task; `async with` stops it, with a deadline, and
    closes its channel."""

    def __init__(self, worker: ZeebeWorker, channel: grpc.aio.Channel) -> None:
        self.worker = worker
        self.channel = channel
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> ZeebeWorker:
        self.task = asyncio.create_task(self.worker.work())
        return self.worker

    async def __aexit__(self, *exc_info) -> None:
        assert self.task is not None
        try:
            if self.task.done():
                self.task.result()  # a worker that died reports why
                return
            try:
                await asyncio.wait_for(self.worker.stop(), timeout=5)
                await asyncio.wait_for(self.task, timeout=5)
            except asyncio.TimeoutError:
                self.task.cancel()
        finally:
            await self.channel.close()


def count_acknowledged_completions(worker: ZeebeWorker, acknowledged: set[int]) -> None:
    """Records each job key whose CompleteJob the gateway acknowledged.

    pyzeebe calls the worker's adapter after the task function and its decorators, so this is
    the only place that knows the completion was accepted, not just attempted.
    """
    adapter = worker.zeebe_adapter
    complete_job = adapter.complete_job

    async def acknowledging_complete_job(**kwargs):
        response = await complete_job(**kwargs)
        acknowledged.add(kwargs["job_key"])
        return response

    adapter.complete_job = acknowledging_complete_job


async def raw_activate_jobs(channel: grpc.aio.Channel, job_type: str, request_timeout_ms: int = -1) -> list:
    """One ActivateJobs call through pyzeebe's generated stub, outside any pyzeebe worker.

    The default request timeout -1 turns long polling off: the gateway answers at once with
    whatever the partitions hand out.
    """
    stub = GatewayStub(channel)
    request = ActivateJobsRequest(
        type=job_type,
        worker="pyzeebe-interop-probe",
        timeout=60_000,
        maxJobsToActivate=10,
        requestTimeout=request_timeout_ms,
    )
    jobs = []
    async for response in stub.ActivateJobs(request, timeout=RAW_ACTIVATE_RPC_TIMEOUT_S):
        jobs.extend(response.jobs)
    return jobs


# --- 1. topology -------------------------------------------------------------------------------


def describe_topology(topology) -> str:
    rows = []
    for broker in sorted(topology.brokers, key=lambda b: b.node_id):
        roles = ", ".join(f"p{p.partition_id}:{p.role.name.lower()}" for p in broker.partitions)
        rows.append(f"node {broker.node_id} {broker.host}:{broker.port} [{roles}]")
    return "; ".join(rows)


def topology_problems(topology) -> list[str]:
    """Everything about `topology` that differs from a healthy 3 x 3 x 3 cluster."""
    problems = []
    if topology.cluster_size != BROKERS:
        problems.append(f"clusterSize {topology.cluster_size}, expected {BROKERS}")
    if topology.partitions_count != PARTITIONS:
        problems.append(f"partitionsCount {topology.partitions_count}, expected {PARTITIONS}")
    if topology.replication_factor != REPLICATION_FACTOR:
        problems.append(
            f"replicationFactor {topology.replication_factor}, expected {REPLICATION_FACTOR}"
        )
    node_ids = sorted(b.node_id for b in topology.brokers)
    if node_ids != list(range(BROKERS)):
        problems.append(f"brokers {node_ids}, expected {list(range(BROKERS))}")
    leaders: dict[int, list[int]] = {pid: [] for pid in range(1, PARTITIONS + 1)}
    replicas: dict[int, int] = {pid: 0 for pid in range(1, PARTITIONS + 1)}
    for broker in topology.brokers:
        for partition in broker.partitions:
            if partition.partition_id not in leaders:
                problems.append(f"node {broker.node_id} lists unknown partition {partition.partition_id}")
                continue
            replicas[partition.partition_id] += 1
            if partition.role == partition.PartitionBrokerRole.LEADER:
                leaders[partition.partition_id].append(broker.node_id)
    for pid in leaders:
        if len(leaders[pid]) != 1:
            problems.append(f"partition {pid} has leaders {leaders[pid]}, expected exactly one")
        if replicas[pid] != REPLICATION_FACTOR:
            problems.append(
                f"partition {pid} is on {replicas[pid]} brokers, expected {REPLICATION_FACTOR}"
            )
    return problems


async def topology(ctx: Context) -> str:
    response = await ctx.client.topology()
    problems = topology_problems(response)
    check(not problems, "; ".join(problems) + f" (topology: {describe_topology(response)})")
    return f"gateway {response.gateway_version!r}: {describe_topology(response)}"


# --- 2. deploy ---------------------------------------------------------------------------------


async def deploy(ctx: Context) -> str:
    response = await ctx.client.deploy_resource(str(ONE_TASK_BPMN), str(MESSAGES_BPMN))
    by_id = {d.bpmn_process_id: d for d in response.deployments}
    check(
        sorted(by_id) == ["messages", "one_task"],
        f"deployed processes {sorted(by_id)}, expected ['messages', 'one_task']"
        f" (deployments: {response.deployments})",
    )
    for process_id, path in (("one_task", ONE_TASK_BPMN), ("messages", MESSAGES_BPMN)):
        process = by_id[process_id]
        check(process.version >= 1, f"{process_id} has version {process.version}")
        check(process.process_definition_key > 0, f"{process_id} has key {process.process_definition_key}")
        check(
            process.resource_name.endswith(path.name),
            f"{process_id} resource name {process.resource_name!r}, expected it to end in {path.name}",
        )
    return "deployment {}: {}".format(
        response.key,
        ", ".join(f"{d.bpmn_process_id} v{d.version} key {d.process_definition_key}" for d in response.deployments),
    )


# --- 3. worker + instances ---------------------------------------------------------------------


async def worker_and_instances(ctx: Context) -> str:
    worker_channel = ctx.new_channel()
    worker = ZeebeWorker(worker_channel, name="pyzeebe-interop")
    seen: dict[int, int] = {}  # process instance key -> job key, from the jobs the worker got
    acknowledged: set[int] = set()

    @worker.task(task_type="work")
    async def work(job: Job) -> dict:
        check(job.type == "work", f"worker got a job of type {job.type!r}")
        seen[job.process_instance_key] = job.key
        return {"done": True}

    count_acknowledged_completions(worker, acknowledged)
    total = INSTANCES_WITHOUT_RESULT + INSTANCES_WITH_RESULT

    async with RunningWorker(worker, worker_channel):
        started = await asyncio.gather(
            *(
                until_distributed(
                    lambda n=n: ctx.client.run_process("one_task", {"n": n, "tag": "without-result"}),
                    f"one_task instance {n}",
                )
                for n in range(INSTANCES_WITHOUT_RESULT)
            )
        )
        results = await asyncio.gather(
            *(
                until_distributed(
                    lambda n=n: ctx.client.run_process_with_result(
                        "one_task", {"n": n, "tag": "with-result"}, timeout=RESULT_TIMEOUT_MS
                    ),
                    f"one_task instance {n} with result",
                )
                for n in range(INSTANCES_WITH_RESULT)
            )
        )
        await wait_until(
            lambda: len(acknowledged) >= total,
            JOBS_DONE_TIMEOUT_S,
            f"{total} acknowledged job completions (have {len(acknowledged)})",
        )

    for n, result in enumerate(results):
        expected = {"n": n, "tag": "with-result", "done": True}
        check(result.bpmn_process_id == "one_task", f"result {n} is of {result.bpmn_process_id!r}")
        check(
            result.variables == expected,
            f"instance {result.process_instance_key} finished with {result.variables}, expected {expected}",
        )
    keys = [s.process_instance_key for s in started] + [r.process_instance_key for r in results]
    check(len(set(keys)) == total, f"instance keys are not unique: {sorted(keys)}")
    missing = [key for key in keys if key not in seen]
    check(not missing, f"the worker never got a job for instances {missing}")
    check(len(seen) == total, f"the worker got jobs for {len(seen)} instances, expected {total}")
    partitions = sorted({key >> 51 for key in keys})

    # The engine completes an instance in the same step as its last job, so once CompleteJob was
    # acknowledged the instance is gone: cancelling it must be rejected NOT_FOUND. An instance
    # still active here would be cancelled, and that is reported as the failure it is.
    still_active = []
    for started_instance in started:
        try:
            await ctx.client.cancel_process_instance(started_instance.process_instance_key)
            still_active.append(started_instance.process_instance_key)
        except ProcessInstanceNotFoundError:
            pass
    check(
        not still_active,
        f"instances {still_active} were still active after their job completed (cancel was accepted)",
    )
    return (
        f"{INSTANCES_WITHOUT_RESULT} without result completed (cancel rejected NOT_FOUND), "
        f"{INSTANCES_WITH_RESULT} with result carried their input and done: true; "
        f"instances on partitions {partitions}"
    )


# --- 4. message --------------------------------------------------------------------------------


async def message(ctx: Context) -> str:
    variables = {"orderId": "o-77", "region": "eu"}
    instance = asyncio.create_task(
        until_distributed(
            lambda: ctx.client.run_process_with_result("messages", variables, timeout=RESULT_TIMEOUT_MS),
            "messages instance",
        )
    )
    # Published messages live 60 s (pyzeebe's default TTL), so the order against the instance's
    # subscriptions does not matter; each must correlate exactly once.
    await ctx.client.publish_message("payment", correlation_key="o-77", variables={"amount": 5})
    await ctx.client.publish_message("shipment-eu", correlation_key="o-77")
    result = await instance
    # As in Zeebe, a message's variables stay local to an element with output mappings: only
    # paid_amount reaches the process scope, not amount.
    expected = {"orderId": "o-77", "region": "eu", "paid_amount": 5}
    check(
        result.variables.get("paid_amount") == 5,
        f"instance {result.process_instance_key} finished with {result.variables}, expected paid_amount 5",
    )
    check(
        result.variables == expected,
        f"instance {result.process_instance_key} finished with {result.variables}, expected {expected}",
    )
    return f"instance {result.process_instance_key} correlated payment and shipment-eu: {result.variables}"


# --- 5. long poll ------------------------------------------------------------------------------


async def long_poll(ctx: Context) -> str:
    """ActivateJobs ends, empty, once its requestTimeout passes, well before the gRPC deadline.

    pyzeebe's worker relies on this: it polls with a gRPC deadline of twice its request timeout
    (20 s when the request timeout is 0, the gateway's default of 10 s), and counts every
    DEADLINE_EXCEEDED as a lost connection; after 10 of them it closes its channel for good.
    """
    channel = ctx.new_channel()
    started = time.monotonic()
    try:
        jobs = await raw_activate_jobs(channel, "nobody-works-on-this", LONG_POLL_REQUEST_TIMEOUT_MS)
    except grpc.aio.AioRpcError as error:
        elapsed_s = time.monotonic() - started
        raise ScenarioFailed(
            f"ActivateJobs with requestTimeout {LONG_POLL_REQUEST_TIMEOUT_MS} ms and a "
            f"{RAW_ACTIVATE_RPC_TIMEOUT_S:.0f} s gRPC deadline ended with {error.code().name} after "
            f"{elapsed_s:.1f} s; expected an empty answer after about "
            f"{LONG_POLL_REQUEST_TIMEOUT_MS / 1000:.0f} s (requestTimeout bounds the long poll)"
        ) from None
    finally:
        await channel.close()
    elapsed_s = time.monotonic() - started
    check(not jobs, f"got jobs of a type nobody created: {jobs}")
    check(
        elapsed_s < LONG_POLL_REQUEST_TIMEOUT_MS / 1000 + 2,
        f"the empty answer took {elapsed_s:.1f} s, requestTimeout was {LONG_POLL_REQUEST_TIMEOUT_MS} ms",
    )
    return f"empty answer after {elapsed_s:.2f} s (requestTimeout {LONG_POLL_REQUEST_TIMEOUT_MS} ms)"


# --- 6. incident -------------------------------------------------------------------------------


async def incident(ctx: Context) -> str:
    """A job whose worker always fails runs out of retries and raises an incident.

    Verified: the deployment of a Modeler-style file with retries="2"; the worker got the job
    exactly twice, with retries 2 then 1; both FailJob calls (retries 1, then 0) were accepted;
    afterwards the job is not activatable, neither by the worker (watched for QUIET_PERIOD_S)
    nor by a raw ActivateJobs (no long poll); UpdateJobRetries on it is accepted (the job still exists, failed)
    and it stays not activatable, which is what an unresolved incident does; the instance is
    still active (CancelProcessInstance is accepted, which also cleans up).
    Not verified: the incident record itself (its key, error type JOB_NO_RETRIES, message),
    since Sluice has no incident query API yet; ResolveIncident needs that key.
    """
    deployed = await ctx.client.deploy_resource(str(FAIL_ALWAYS_BPMN))
    check(
        [d.bpmn_process_id for d in deployed.deployments] == ["fail_always"],
        f"deployed {deployed.deployments}, expected the process fail_always",
    )

    worker_channel = ctx.new_channel()
    worker = ZeebeWorker(worker_channel, name="pyzeebe-interop-failing")
    activations: list[tuple[int, int, int]] = []  # (job key, instance key, retries)
    fail_results: list[str] = []

    async def fail_and_record(error: Exception, job: Job, controller: JobController) -> None:
        try:
            await controller.set_failure_status(f"pyzeebe interop: {error}")
            fail_results.append("accepted")
        except Exception as fail_error:  # reported below, with the scenario's other findings
            fail_results.append(f"{type(fail_error).__name__}: {fail_error}")

    @worker.task(task_type="fail-always", exception_handler=fail_and_record)
    async def fail_always(job: Job) -> dict:
        activations.append((job.key, job.process_instance_key, job.retries))
        raise RuntimeError(f"fail-always attempt {len(activations)}")

    async with RunningWorker(worker, worker_channel):
        instance = await until_distributed(
            lambda: ctx.client.run_process("fail_always", {"case": "incident"}), "fail_always instance"
        )
        await wait_until(
            lambda: len(fail_results) >= FAIL_ALWAYS_RETRIES,
            JOBS_DONE_TIMEOUT_S,
            f"{FAIL_ALWAYS_RETRIES} failed attempts (have {len(fail_results)})",
        )
        await asyncio.sleep(QUIET_PERIOD_S)  # a third activation would show up here

    check(
        len(activations) == FAIL_ALWAYS_RETRIES,
        f"the worker got the job {len(activations)} times, expected {FAIL_ALWAYS_RETRIES}: {activations}",
    )
    job_keys = {key for key, _, _ in activations}
    check(len(job_keys) == 1, f"expected one job, got keys {sorted(job_keys)}")
    job_key = job_keys.pop()
    check(
        all(pi == instance.process_instance_key for _, pi, _ in activations),
        f"jobs of other instances: {activations}, expected instance {instance.process_instance_key}",
    )
    retries_seen = [retries for _, _, retries in activations]
    expected_retries = list(range(FAIL_ALWAYS_RETRIES, 0, -1))
    check(retries_seen == expected_retries, f"activations had retries {retries_seen}, expected {expected_retries}")
    check(
        fail_results == ["accepted"] * FAIL_ALWAYS_RETRIES,
        f"FailJob results {fail_results}, expected {FAIL_ALWAYS_RETRIES} accepted",
    )

    probe_channel = ctx.new_channel()
    try:
        leftover = await raw_activate_jobs(probe_channel, "fail-always")
        check(not leftover, f"job still activatable after its retries ran out: {[j.key for j in leftover]}")

        # New retries alone do not make the job activatable while its incident is unresolved.
        await GatewayStub(probe_channel).UpdateJobRetries(
            UpdateJobRetriesRequest(jobKey=job_key, retries=1), timeout=10
        )
        leftover = await raw_activate_jobs(probe_channel, "fail-always")
        check(
            not leftover,
            f"job {job_key} became activatable on UpdateJobRetries alone, so no incident held it",
        )
    finally:
        await probe_channel.close()

    await ctx.client.cancel_process_instance(instance.process_instance_key)
    return (
        f"job {job_key} failed with retries {retries_seen} -> 0; not activatable afterwards, "
        f"not even after UpdateJobRetries; instance {instance.process_instance_key} was still active"
    )


SCENARIOS = [topology, deploy, worker_and_instances, message, long_poll, incident]
NEEDS = {"worker_and_instances": "deploy", "message": "deploy"}
