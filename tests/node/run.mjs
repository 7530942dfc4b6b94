// An unmodified BullMQ app pointed at ONE Redis server: slotbridge's port.
//
//   node run.mjs PORT full             1,000 jobs (delayed, prioritised,
//                                      retried, failing), checked end to end
//   node run.mjs PORT expect-crossslot one add that must fail with CROSSSLOT
//   node run.mjs PORT flow             a parent job with 5 children in the
//                                      same queue (FlowProducer)
//
// Prints one JSON line: {"ok":true,...} (exit 0) or {"ok":false,"error":...}
// (exit 1). The whole run is bounded by TIMEOUT_MS.
//
// Debugging: DEBUG=ioredis:redis logs every command ioredis sends (stderr).

import { FlowProducer, Queue, QueueEvents, Worker } from 'bullmq';

const TIMEOUT_MS = Number(process.env.BULLMQ_TEST_TIMEOUT_MS || 120_000);
const TOTAL = 1000;
const CONCURRENCY = 10;
const BACKOFF_MS = 50;

const [portArg, mode] = process.argv.slice(2);
const port = Number(portArg);
const started = Date.now();
let finished = false;

function finish(result) {
  if (finished) return;
  finished = true;
  const line = JSON.stringify(result);
  process.stdout.write(line + '\n', () => process.exit(result.ok ? 0 : 1));
}

function fail(err) {
  const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  finish({ ok: false, error });
}

if (!Number.isInteger(port) || port <= 0 || !['full', 'expect-crossslot', 'flow'].includes(mode)) {
  fail(new Error('usage: node run.mjs PORT full|expect-crossslot|flow'));
}

const deadline = setTimeout(
  () => fail(new Error(`timed out after ${TIMEOUT_MS} ms (${progress()})`)),
  TIMEOUT_MS,
);
deadline.unref();
process.on('unhandledRejection', (e) => fail(e));
process.on('uncaughtException', (e) => fail(e));

const connection = {
  host: '127.0.0.1',
  port,
  // Workers require this; it also keeps every client on the same settings.
  maxRetriesPerRequest: null,
  // Fail fast instead of reconnecting forever when the proxy is gone.
  retryStrategy: (times) => (times > 20 ? null : Math.min(times * 100, 1000)),
};

// A fresh queue name per run, so reruns on one cluster do not interfere.
const queueName = `sbtest-${Date.now().toString(36)}-${process.pid}`;

// ---------------------------------------------------------------------------
// The job plan: what each job is and what must happen to it.
// ---------------------------------------------------------------------------

/**
 * kind:
 *   plain    - succeeds first time
 *   delayed  - delay 100..490 ms, then succeeds
 *   prio     - priority 1..5, succeeds
 *   dprio    - delayed and prioritised, succeeds
 *   retry2   - attempts 3, exponential back-off, fails once then succeeds
 *   retry3   - attempts 3, exponential back-off, fails twice then succeeds
 *   fail3    - attempts 3, exponential back-off, always fails (failed for good)
 *   fail1    - attempts 1, fails (failed for good)
 */
function planFor(i) {
  switch (i % 20) {
    case 1:
    case 11:
      return { kind: 'delayed', opts: { delay: 100 + (i % 40) * 10 } };
    case 2:
    case 12:
    case 7:
      return { kind: 'prio', opts: { priority: 1 + (i % 5) } };
    case 3:
      return { kind: 'dprio', opts: { delay: 150 + (i % 30) * 10, priority: 1 + (i % 3) } };
    case 4:
    case 14:
      return {
        kind: 'retry3',
        opts: { attempts: 3, backoff: { type: 'exponential', delay: BACKOFF_MS } },
      };
    case 5:
      return {
        kind: 'retry2',
        opts: { attempts: 3, backoff: { type: 'exponential', delay: BACKOFF_MS } },
      };
    case 6:
      return {
        kind: 'fail3',
        opts: { attempts: 3, backoff: { type: 'exponential', delay: BACKOFF_MS } },
      };
    case 16:
      return { kind: 'fail1', opts: {} };
    default:
      return { kind: 'plain', opts: {} };
  }
}

const FAILS_BEFORE_SUCCESS = { retry2: 1, retry3: 2 };
const ALWAYS_FAILS = new Set(['fail3', 'fail1']);

const expectedResult = (i) => ({ i, square: i * i, tag: `job-${i}` });

const plan = Array.from({ length: TOTAL }, (_, i) => ({ i, ...planFor(i) }));
const expectFailed = plan.filter((p) => ALWAYS_FAILS.has(p.kind)).length;
const expectCompleted = TOTAL - expectFailed;
const expectAttempts = (p) =>
  ALWAYS_FAILS.has(p.kind) ? p.opts.attempts || 1 : 1 + (FAILS_BEFORE_SUCCESS[p.kind] || 0);

// ---------------------------------------------------------------------------
// Observations.
// ---------------------------------------------------------------------------

const calls = new Map(); // job id -> processor invocations
const workerCompleted = new Map(); // job id -> result (from the Worker)
const workerFinalFailed = new Set(); // job id (Worker 'failed', no retry left)
const eventsCompleted = new Map(); // job id -> returnvalue (QueueEvents)
const eventsFailed = new Set(); // job id (QueueEvents)
const problems = [];
const idToIndex = new Map();

function progress() {
  return (
    `worker completed ${workerCompleted.size}/${expectCompleted}, ` +
    `worker failed ${workerFinalFailed.size}/${expectFailed}, ` +
    `events completed ${eventsCompleted.size}/${expectCompleted}, ` +
    `events failed ${eventsFailed.size}/${expectFailed}, problems ${problems.length}`
  );
}

function problem(msg) {
  if (problems.length < 20) problems.push(msg);
}

async function closeAll(things) {
  await Promise.allSettled(things.filter(Boolean).map((t) => t.close()));
}

async function expectCrossslot() {
  const queue = new Queue(queueName, { connection });
  queue.on('error', () => {});
  try {
    await queue.add('one', { x: 1 });
    fail(new Error('queue.add succeeded, expected a CROSSSLOT error'));
  } catch (e) {
    const msg = String(e && e.message);
    if (msg.includes('CROSSSLOT')) {
      finish({ ok: true, error: msg, seconds: (Date.now() - started) / 1000 });
    } else {
      fail(new Error(`expected CROSSSLOT, got: ${msg}`));
    }
  } finally {
    await closeAll([queue]);
  }
}

async function full() {
  const queue = new Queue(queueName, { connection });
  const queueEvents = new QueueEvents(queueName, { connection });
  let worker;
  const onError = (who) => (e) => problem(`${who} error: ${e && e.message}`);
  queue.on('error', onError('queue'));
  queueEvents.on('error', onError('queueEvents'));
  try {
    await queue.waitUntilReady();
    await queueEvents.waitUntilReady();

    queueEvents.on('completed', ({ jobId, returnvalue }) => {
      if (eventsCompleted.has(jobId)) problem(`QueueEvents: job ${jobId} completed twice`);
      let value = returnvalue;
      if (typeof value === 'string') {
        try {
          value = JSON.parse(value);
        } catch {
          /* keep the string */
        }
      }
      eventsCompleted.set(jobId, value);
    });
    queueEvents.on('failed', ({ jobId }) => {
      if (eventsFailed.has(jobId)) problem(`QueueEvents: job ${jobId} failed twice`);
      eventsFailed.add(jobId);
    });

    // The worker exists before the jobs, but starts only after the initial
    // counts are checked.
    worker = new Worker(
      queueName,
      async (job) => {
        calls.set(job.id, (calls.get(job.id) || 0) + 1);
        const { i, kind } = job.data;
        if (job.name !== `job-${i}`) throw new Error(`wrong name ${job.name} for ${i}`);
        if (ALWAYS_FAILS.has(kind)) throw new Error(`planned failure of ${i} (${kind})`);
        const fails = FAILS_BEFORE_SUCCESS[kind] || 0;
        if (job.attemptsMade < fails) {
          throw new Error(`planned transient failure of ${i}, attempt ${job.attemptsMade + 1}`);
        }
        return expectedResult(i);
      },
      { connection, concurrency: CONCURRENCY, autorun: false, drainDelay: 1 },
    );
    worker.on('error', onError('worker'));
    worker.on('completed', (job, result) => {
      if (workerCompleted.has(job.id)) problem(`Worker: job ${job.id} completed twice`);
      workerCompleted.set(job.id, result);
    });
    worker.on('failed', (job, err) => {
      if (!job) return problem(`Worker: failed without a job: ${err && err.message}`);
      const p = plan[job.data.i];
      if (job.attemptsMade >= (p.opts.attempts || 1)) {
        if (workerFinalFailed.has(job.id)) problem(`Worker: job ${job.id} failed twice`);
        workerFinalFailed.add(job.id);
      }
    });
    await worker.waitUntilReady();

    // Bulk add, all 1,000 at once.
    const jobs = await queue.addBulk(
      plan.map((p) => ({ name: `job-${p.i}`, data: { i: p.i, kind: p.kind }, opts: p.opts })),
    );
    if (jobs.length !== TOTAL) throw new Error(`addBulk returned ${jobs.length} jobs`);
    for (const [k, job] of jobs.entries()) {
      if (!job.id) throw new Error(`addBulk: job ${k} has no id`);
      if (idToIndex.has(job.id)) throw new Error(`addBulk: duplicate id ${job.id}`);
      idToIndex.set(job.id, k);
    }

    // Initial state, before any processing.
    const byKind = (kinds) => plan.filter((p) => kinds.includes(p.kind)).length;
    const initial = await queue.getJobCounts();
    const wantInitial = {
      waiting: byKind(['plain', 'retry2', 'retry3', 'fail3', 'fail1']),
      prioritized: byKind(['prio']),
      delayed: byKind(['delayed', 'dprio']),
      active: 0,
      completed: 0,
      failed: 0,
    };
    for (const [k, v] of Object.entries(wantInitial)) {
      if (initial[k] !== v) {
        throw new Error(
          `initial getJobCounts: ${k}=${initial[k]}, want ${v} (${JSON.stringify(initial)})`,
        );
      }
    }

    // Process everything.
    const runP = worker.run().catch((e) => problem(`worker.run: ${e && e.message}`));
    while (
      workerCompleted.size + workerFinalFailed.size < TOTAL ||
      eventsCompleted.size < expectCompleted ||
      eventsFailed.size < expectFailed
    ) {
      if (problems.length) throw new Error(problems.join('; '));
      await new Promise((r) => setTimeout(r, 50));
    }
    if (problems.length) throw new Error(problems.join('; '));

    // Exactly once, right results, on both channels.
    for (const p of plan) {
      const id = jobs[p.i].id;
      const n = calls.get(id) || 0;
      if (n !== expectAttempts(p)) {
        throw new Error(`job ${p.i} (${p.kind}) ran ${n} times, want ${expectAttempts(p)}`);
      }
      if (ALWAYS_FAILS.has(p.kind)) {
        if (!workerFinalFailed.has(id) || !eventsFailed.has(id)) {
          throw new Error(`job ${p.i} (${p.kind}) not seen failing by Worker and QueueEvents`);
        }
        if (workerCompleted.has(id) || eventsCompleted.has(id)) {
          throw new Error(`job ${p.i} (${p.kind}) completed but should fail`);
        }
      } else {
        const want = JSON.stringify(expectedResult(p.i));
        if (JSON.stringify(workerCompleted.get(id)) !== want) {
          throw new Error(`job ${p.i}: Worker result ${JSON.stringify(workerCompleted.get(id))}`);
        }
        if (JSON.stringify(eventsCompleted.get(id)) !== want) {
          throw new Error(`job ${p.i}: QueueEvents result ${JSON.stringify(eventsCompleted.get(id))}`);
        }
        if (workerFinalFailed.has(id) || eventsFailed.has(id)) {
          throw new Error(`job ${p.i} (${p.kind}) failed but should complete`);
        }
      }
    }
    if (workerCompleted.size !== expectCompleted || eventsCompleted.size !== expectCompleted) {
      throw new Error(`completed: Worker ${workerCompleted.size}, QueueEvents ${eventsCompleted.size}, want ${expectCompleted}`);
    }

    // The stored jobs, read back from Redis.
    const completedJobs = await queue.getJobs(['completed'], 0, -1);
    const failedJobs = await queue.getJobs(['failed'], 0, -1);
    if (completedJobs.length !== expectCompleted || failedJobs.length !== expectFailed) {
      throw new Error(
        `getJobs: ${completedJobs.length} completed, ${failedJobs.length} failed; ` +
          `want ${expectCompleted} and ${expectFailed}`,
      );
    }
    for (const job of [...completedJobs, ...failedJobs]) {
      const p = plan[job.data.i];
      if (!p || jobs[p.i].id !== job.id) throw new Error(`stored job ${job.id} is unknown`);
      if (job.attemptsMade !== expectAttempts(p)) {
        throw new Error(`stored job ${p.i} (${p.kind}): attemptsMade ${job.attemptsMade}, want ${expectAttempts(p)}`);
      }
      if (p.opts.delay && job.processedOn < job.timestamp + p.opts.delay) {
        throw new Error(`delayed job ${p.i} processed ${job.timestamp + p.opts.delay - job.processedOn} ms early`);
      }
      if (ALWAYS_FAILS.has(p.kind)) {
        if (!String(job.failedReason).startsWith(`planned failure of ${p.i} `)) {
          throw new Error(`stored job ${p.i}: failedReason ${job.failedReason}`);
        }
      } else if (JSON.stringify(job.returnvalue) !== JSON.stringify(expectedResult(p.i))) {
        throw new Error(`stored job ${p.i}: returnvalue ${JSON.stringify(job.returnvalue)}`);
      }
    }

    // Final counts, exact.
    const counts = await queue.getJobCounts();
    for (const [k, v] of Object.entries(counts)) {
      const want = k === 'completed' ? expectCompleted : k === 'failed' ? expectFailed : 0;
      if (v !== want) throw new Error(`final getJobCounts: ${k}=${v}, want ${want} (${JSON.stringify(counts)})`);
    }
    if (counts.completed === undefined || counts.failed === undefined) {
      throw new Error(`final getJobCounts lacks completed/failed: ${JSON.stringify(counts)}`);
    }

    await worker.close();
    await runP;
    const seconds = (Date.now() - started) / 1000;
    await closeAll([queueEvents, queue]);
    finish({
      ok: true,
      queue: queueName,
      completed: workerCompleted.size,
      failed: workerFinalFailed.size,
      counts,
      initialCounts: initial,
      seconds,
    });
  } catch (e) {
    // Report at once: closing may hang on a broken connection, and the
    // process exits as soon as the line is written.
    fail(e);
  }
}

// A parent and its children in one queue: each finished child must be
// removed from the parent's dependencies and its result recorded under the
// child's key name (`bull:<queue>:<id>`), exactly as on one Redis server.
async function flow() {
  const CHILDREN = 5;
  const flows = new FlowProducer({ connection });
  const queue = new Queue(queueName, { connection });
  let worker;
  try {
    const tree = await flows.add({
      name: 'parent',
      queueName,
      data: {},
      opts: { jobId: 'parent' },
      children: Array.from({ length: CHILDREN }, (_, c) => ({
        name: 'child',
        queueName,
        data: { c },
        opts: { jobId: `child-${c}` },
      })),
    });
    worker = new Worker(
      queueName,
      async (job) => {
        if (job.name === 'child') return job.data.c * 10;
        const values = await job.getChildrenValues();
        return { values };
      },
      { connection, concurrency: 3 },
    );
    worker.on('error', (e) => problem(`worker error: ${e && e.message}`));
    let state;
    for (let k = 0; k < 100; k++) {
      state = await tree.job.getState();
      if (state === 'completed' || state === 'failed' || problems.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (problems.length) throw new Error(problems.join('; '));
    const parent = await queue.getJob('parent');
    const want = {};
    for (let c = 0; c < CHILDREN; c++) want[`bull:${queueName}:child-${c}`] = c * 10;
    const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o || {}).sort()));
    if (state !== 'completed') {
      const deps = await parent.getDependencies();
      throw new Error(
        `parent is ${state} after 5 s; dependencies ${JSON.stringify(deps)}; ` +
          `children values ${JSON.stringify(await parent.getChildrenValues())}`,
      );
    }
    if (sorted(parent.returnvalue && parent.returnvalue.values) !== sorted(want)) {
      throw new Error(`parent saw children values ${JSON.stringify(parent.returnvalue)}, want ${JSON.stringify(want)}`);
    }
    const counts = await queue.getJobCounts();
    for (const [k, v] of Object.entries(counts)) {
      const expect = k === 'completed' ? CHILDREN + 1 : 0;
      if (v !== expect) throw new Error(`getJobCounts: ${k}=${v}, want ${expect} (${JSON.stringify(counts)})`);
    }
    finish({ ok: true, queue: queueName, counts, seconds: (Date.now() - started) / 1000 });
  } catch (e) {
    fail(e);
  }
  await closeAll([worker, flows, queue]);
}

try {
  if (mode === 'full') await full();
  else if (mode === 'flow') await flow();
  else if (mode === 'expect-crossslot') await expectCrossslot();
} catch (e) {
  fail(e);
}
