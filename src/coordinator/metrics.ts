/**
 * The coordinator's Prometheus metrics (prom-client, own registry, prefix
 * dptrain_, base units). Worker labels are bounded slot ids ("w0".."wN-1").
 */
import client from 'prom-client';
import type { WorkerInfo } from '../shared/wire/protocol.js';

export const VERSION = '0.1.0';

/**
 * prom-client's gauges nodejs_active_{handles,requests,resources}_total carry
 * the suffix reserved for counters: promtool check metrics rejects them and
 * OpenMetrics consumers would read them as counters. The per-type gauges
 * without the suffix stay; their sum is the same number.
 */
const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** prom-client's default process metrics, less the misnamed ones. Shared with the worker's registry. */
export function collectProcessMetrics(registry: client.Registry): void {
  client.collectDefaultMetrics({ register: registry });
  for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
}

/**
 * A gauge that is absent from /metrics until its first set(): a value that is
 * not known yet (no step, no evaluation, no checkpoint so far) must not read
 * as 0. prom-client starts an unlabelled gauge at 0; removing that sample
 * leaves only HELP and TYPE until set() creates it again.
 */
function unknownUntilSet(g: client.Gauge): client.Gauge {
  g.remove();
  return g;
}

export function createCoordinatorMetrics() {
  const registry = new client.Registry();
  collectProcessMetrics(registry);
  const r = [registry];
  const workerBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
  return {
    registry,
    tokens: new client.Counter({ name: 'dptrain_tokens_total', help: 'Tokens trained on (summed over workers).', registers: r }),
    tokensPerSecond: unknownUntilSet(new client.Gauge({ name: 'dptrain_tokens_per_second', help: 'Training throughput over the last log interval, tokens per second.', registers: r })),
    steps: new client.Counter({ name: 'dptrain_steps_total', help: 'Optimizer steps: batches trained on (with local SGD each round counts its K inner steps).', registers: r }),
    rounds: new client.Counter({ name: 'dptrain_rounds_total', help: 'Rounds applied: synchronisations of the workers, one step of the coordinator\'s optimizer each (the outer one with local SGD; equal to dptrain_steps_total without it).', registers: r }),
    trainLoss: unknownUntilSet(new client.Gauge({ name: 'dptrain_train_loss', help: 'Mean cross-entropy of the last round, nats per token.', registers: r })),
    trainPerplexity: unknownUntilSet(new client.Gauge({ name: 'dptrain_train_perplexity', help: 'Training perplexity, exp(mean loss) over the current epoch so far.', registers: r })),
    validationPerplexity: unknownUntilSet(new client.Gauge({ name: 'dptrain_validation_perplexity', help: 'Perplexity on the held-out split, at the last log interval.', registers: r })),
    roundDuration: new client.Histogram({ name: 'dptrain_round_duration_seconds', help: 'Wall time of a synchronous round, from sending parameters to the optimizer step.', buckets: [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30], registers: r }),
    workerCompute: new client.Histogram({ name: 'dptrain_worker_compute_seconds', help: 'Gradient computation time reported by each worker.', labelNames: ['worker'], buckets: workerBuckets, registers: r }),
    workerWait: new client.Histogram({ name: 'dptrain_worker_wait_seconds', help: "Straggler wait: how long a worker's reply waited for the round's last reply.", labelNames: ['worker'], buckets: [0, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5], registers: r }),
    workerTokens: new client.Counter({ name: 'dptrain_worker_tokens_total', help: 'Tokens trained on by each worker.', labelNames: ['worker'], registers: r }),
    gradBytes: new client.Counter({ name: 'dptrain_gradient_bytes_received_total', help: 'Bytes of gradient messages received from workers.', registers: r }),
    paramBytes: new client.Counter({ name: 'dptrain_parameter_bytes_sent_total', help: 'Bytes of parameter and step messages sent to workers.', registers: r }),
    relayWorkers: new client.Gauge({ name: 'dptrain_relay_carried_workers', help: 'Workers carried by each relay connected to this coordinator (label: the slot of the relay, as on the status page).', labelNames: ['relay'], registers: r }),
    workersConnected: new client.Gauge({ name: 'dptrain_workers_connected', help: 'Workers that completed the handshake and are connected (a relay counts the workers it carries).', registers: r }),
    paused: new client.Gauge({ name: 'dptrain_training_paused', help: '1 while training waits for --min-workers.', registers: r }),
    membershipEpoch: new client.Gauge({ name: 'dptrain_membership_epoch', help: 'Bumped on every join and leave.', registers: r }),
    joins: new client.Counter({ name: 'dptrain_worker_joins_total', help: 'Workers that joined.', registers: r }),
    leaves: new client.Counter({ name: 'dptrain_worker_leaves_total', help: 'Workers that left cleanly.', registers: r }),
    workerInfo: new client.Gauge({ name: 'dptrain_worker_info', help: 'Each connected worker (value 1): its slot, name (browser:<family> for a browser tab), backend and device.', labelNames: ['worker', 'name', 'backend', 'device'], registers: r }),
    failures: new client.Counter({ name: 'dptrain_worker_failures_total', help: 'Workers dropped: missed a round deadline or heartbeats (timeout), lost connection (disconnect), or broke the protocol (protocol).', labelNames: ['reason'], registers: r }),
    rejected: new client.Counter({ name: 'dptrain_rejected_messages_total', help: 'Messages and connections refused, by error code.', labelNames: ['code'], registers: r }),
    epoch: new client.Gauge({ name: 'dptrain_epoch', help: 'Current epoch (0-based).', registers: r }),
    step: new client.Gauge({ name: 'dptrain_step', help: 'Optimizer steps so far: batches trained on (with local SGD, inner steps).', registers: r }),
    gradNorm: unknownUntilSet(new client.Gauge({ name: 'dptrain_gradient_norm', help: 'Global L2 norm of the averaged gradient before clipping.', registers: r })),
    learningRate: new client.Gauge({ name: 'dptrain_learning_rate', help: 'Learning rate of the optimizer.', registers: r }),
    lastStep: unknownUntilSet(new client.Gauge({ name: 'dptrain_last_step_timestamp_seconds', help: 'Unix time of the last optimizer step.', registers: r })),
    lastCheckpoint: unknownUntilSet(new client.Gauge({ name: 'dptrain_last_checkpoint_timestamp_seconds', help: 'Unix time of the last checkpoint written successfully (absent until one is written or resumed from).', registers: r })),
    checkpointFailures: new client.Counter({ name: 'dptrain_checkpoint_failures_total', help: 'Checkpoint writes that failed (the previous checkpoint stays intact).', registers: r }),
    info: new client.Gauge({ name: 'dptrain_info', help: 'Build and backend of the coordinator and the model it trains (value 1).', labelNames: ['backend', 'device', 'version', 'model', 'model_hyper', 'tokenizer'], registers: r }),
  };
}

export type CoordinatorMetrics = ReturnType<typeof createCoordinatorMetrics>;

/** dptrain_worker_info's labels for a member: the name it gave, else host:pid. */
export function workerInfoLabels(m: { slot: string; info: WorkerInfo }): { worker: string; name: string; backend: string; device: string } {
  return { worker: m.slot, name: m.info.name ?? `${m.info.host}:${m.info.pid}`, backend: m.info.backend, device: m.info.device };
}

/** Pre-create the per-reason and per-code series so dashboards see zeros, not gaps. */
export function initSeries(m: CoordinatorMetrics): void {
  for (const reason of ['timeout', 'disconnect', 'protocol']) m.failures.inc({ reason }, 0);
  m.tokens.inc(0);
  m.steps.inc(0);
  m.rounds.inc(0);
  m.joins.inc(0);
  m.leaves.inc(0);
  m.gradBytes.inc(0);
  m.paramBytes.inc(0);
  m.checkpointFailures.inc(0);
}
