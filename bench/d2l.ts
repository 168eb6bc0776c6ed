/**
 * Part `d2l`: the d2l.ai LSTM chapter's setup, run with the in-process
 * reference loop (trainLocal): The Time Machine, first 10,000 tokens, batch
 * 32, 35 steps, 256 hidden units, SGD lr 1, gradient clipping at 1,
 * sequential partition, 500 epochs. d2l reports a perplexity of 1.1.
 *
 * Unlike d2l, the last 10% of those tokens are held out for validation, so
 * the model trains on the first 9,000.
 */
import { resolveOptions, type TrainConfig } from '../src/shared/config.js';
import { buildCorpus } from '../src/shared/data/corpus.js';
import { loadCorpusText } from '../src/shared/data/corpus-source.js';
import { perplexityOf, predict } from '../src/shared/model/evaluate.js';
import { modelOf, trainLocal, type EpochReport } from '../src/shared/train/local-trainer.js';
import { COORDINATOR_OPTIONS } from '../src/shared/options.js';
import type { ParameterServer } from '../src/shared/train/param-server.js';
import { ensureTimeMachine } from './lib/cluster.js';
import { downsample, fmt, sig, sparkline, table } from './lib/stats.js';
import type { BenchContext, BenchPart, Section } from './lib/types.js';
import { tokenizerFromConfig } from '../src/shared/data/tokenizer.js';

const TARGET_PERPLEXITY = 1.3;
const D2L_PERPLEXITY = 1.1;
const SAMPLE_PREFIX = 'time traveller';

class StopTraining extends Error {}

interface CurvePoint {
  epoch: number;
  trainPerplexity: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
  validationPerplexity?: number;
}

export const d2lPart: BenchPart = {
  name: 'd2l',
  title: 'd2l reproduction: char-LSTM on The Time Machine, first 10,000 tokens',
  summary: 'the d2l LSTM setup (500 epochs) with the in-process reference loop: perplexity curve, wall time, sample',
  flags: {
    epochs: { type: 'number', default: 500, describe: 'epochs to train (d2l: 500)' },
    'time-limit': { type: 'number', default: 570, describe: 'seconds after which training stops at the end of the current epoch (the rule: a part stays under 10 minutes)' },
    'eval-every': { type: 'number', default: 25, describe: 'epochs between validation perplexities (the rows of the table)' },
    seed: { type: 'number', default: 0, describe: 'seed of parameter init and data order' },
  },

  async run(ctx: BenchContext): Promise<Section> {
    const epochs = ctx.flag<number>('epochs');
    const timeLimit = ctx.flag<number>('time-limit');
    const evalEvery = Math.max(1, Math.round(ctx.flag<number>('eval-every')));
    const source = ensureTimeMachine(ctx);
    const text = await loadCorpusText('timemachine', { dataDir: ctx.dataDir, onWarning: (m) => ctx.log(m) });
    // d2l's own numbers for this file (load_corpus_time_machine): checked on the real book here, since tests cannot have it.
    const whole = buildCorpus(text.text, { valFraction: 0 });
    if (whole.totalTokens !== 170580 || whole.vocab.size !== 28 || whole.vocab.idxToToken.slice(0, 5).join('|') !== '<unk>| |e|t|a') {
      throw new Error(`The Time Machine does not give d2l's corpus: ${whole.totalTokens} tokens, vocabulary ${whole.vocab.size} (d2l: 170580 and 28)`);
    }
    // Flags and DPTRAIN_* variables of the CLI do not apply here: the d2l values are spelled out.
    const cfg = resolveOptions<TrainConfig>(
      COORDINATOR_OPTIONS,
      { corpus: 'timemachine', maxTokens: 10000, valFraction: 0.1, batchSize: 32, numSteps: 35, hidden: 256, optimizer: 'sgd', lr: 1, clip: 1, partition: 'sequential', epochs, seed: ctx.flag<number>('seed') },
      {},
    );
    const corpus = buildCorpus(text.text, { maxTokens: cfg.maxTokens, valFraction: cfg.valFraction });
    const dims = modelOf(cfg, corpus);
    ctx.log(`${source}: ${fmt(corpus.totalTokens)} tokens, vocabulary ${corpus.vocab.size}; training on ${fmt(corpus.train.length)}, validating on ${fmt(corpus.validation.length)}`);

    const curve: CurvePoint[] = [];
    let server: ParameterServer | null = null;
    let reachedAt: number | null = null;
    let trainSeconds = 0;
    let evalSeconds = 0;
    let steps = 0;
    let stoppedEarly = false;
    let trainCpuSeconds = 0;
    let trainComputeSeconds = 0;
    const cpuSeconds = () => {
      const c = process.cpuUsage();
      return (c.user + c.system) / 1e6;
    };
    const t0 = performance.now();
    let cpuMark = cpuSeconds();
    const onEpoch = (r: EpochReport, s: ParameterServer) => {
      const epochCpu = cpuSeconds() - cpuMark;
      trainCpuSeconds += epochCpu;
      trainComputeSeconds += Math.min(r.seconds, epochCpu);
      server = s;
      steps = r.step;
      const epoch = r.epoch + 1;
      trainSeconds += r.seconds;
      if (reachedAt === null && r.trainPerplexity <= TARGET_PERPLEXITY) reachedAt = epoch;
      const point: CurvePoint = { epoch, trainPerplexity: r.trainPerplexity, tokensPerSecond: r.tokensPerSecond, elapsedSeconds: trainSeconds };
      if (epoch === 1 || epoch % evalEvery === 0 || epoch === cfg.epochs) {
        const e0 = performance.now();
        point.validationPerplexity = perplexityOf(s.params(), dims, corpus.validation, cfg.numSteps, cfg.batchSize);
        evalSeconds += (performance.now() - e0) / 1000;
        ctx.log(`epoch ${epoch}: train perplexity ${r.trainPerplexity.toFixed(3)}, validation ${point.validationPerplexity.toFixed(3)}, ${fmt(r.tokensPerSecond)} tokens/s, ${trainSeconds.toFixed(0)} s`);
      }
      curve.push(point);
      cpuMark = cpuSeconds();
      // trainLocal has no stop hook; throwing out of the callback ends the run
      // between steps (leaving only the carried LSTM state tensors behind).
      if (epoch < cfg.epochs && (performance.now() - t0) / 1000 > timeLimit) throw new StopTraining();
    };
    try {
      server = trainLocal(cfg, corpus, { onEpoch }).server;
    } catch (e) {
      if (!(e instanceof StopTraining)) throw e;
      stoppedEarly = true;
      ctx.log(`stopped after epoch ${curve.length}: --time-limit ${timeLimit} s reached`);
    }
    const wallSeconds = (performance.now() - t0) / 1000;
    if (server === null) throw new Error('training finished without completing an epoch');
    const final: ParameterServer = server;

    const params = final.params();
    const last = curve[curve.length - 1];
    const trainPerplexityEval = perplexityOf(params, dims, corpus.train, cfg.numSteps, cfg.batchSize);
    const validationPerplexity = last.validationPerplexity ?? perplexityOf(params, dims, corpus.validation, cfg.numSteps, cfg.batchSize);
    const sample = predict(params, dims, tokenizerFromConfig(cfg, corpus.vocab), SAMPLE_PREFIX, 50);
    final.dispose();
    const tokens = steps * cfg.batchSize * cfg.numSteps;
    const lowestValidation = Math.min(...curve.map((p) => p.validationPerplexity ?? Infinity));
    const tokensPerSecond = tokens / trainSeconds;
    const tokensPerComputeSecond = tokens / trainComputeSeconds;

    // ---- report
    const md: string[] = [];
    md.push(
      `Setup (the d2l LSTM chapter's): ${source}, first ${fmt(cfg.maxTokens)} character tokens (vocabulary ${corpus.vocab.size}), batch ${cfg.batchSize}, ${cfg.numSteps} steps, ` +
        `${cfg.hidden} hidden units, SGD with learning rate ${cfg.lr}, gradient clipping at norm ${cfg.clip}, ${cfg.partition} partition, ${fmt(cfg.epochs)} epochs, seed ${cfg.seed}, ` +
        `one process (\`trainLocal\`, the hand-derived step). Validation fraction ${cfg.valFraction}: **the model trains on the first ${fmt(corpus.train.length)} tokens** and the last ${fmt(corpus.validation.length)} are held out, ` +
        `where d2l trains on all ${fmt(cfg.maxTokens)} (and reports no validation perplexity). ${fmt(steps / Math.max(1, curve.length), 0)} steps per epoch.`,
    );
    md.push('');
    const reached = reachedAt === null ? `not reached within ${curve.length} epochs` : `epoch **${reachedAt}**`;
    md.push(
      table(
        ['result', 'value'],
        [
          [`epochs run`, stoppedEarly ? `${curve.length} of ${cfg.epochs} (stopped by --time-limit ${timeLimit} s)` : `${curve.length}`],
          [`train perplexity first ≤ ${TARGET_PERPLEXITY}`, `${reached} (target: within 500; d2l ends at ${D2L_PERPLEXITY})`],
          ['final train perplexity (running mean over the last epoch, as d2l reports)', `**${last.trainPerplexity.toFixed(3)}**`],
          ['final train perplexity (final parameters, evaluation pass)', trainPerplexityEval.toFixed(3)],
          ['final validation perplexity (held-out last 10%)', `**${validationPerplexity.toFixed(3)}**`],
          ['wall time', `**${fmt(wallSeconds, 0)} s** (${fmt(trainSeconds, 0)} s training, ${fmt(evalSeconds, 1)} s validation passes)`],
          ['compute time of the training (per epoch, min of wall clock and CPU time)', `${fmt(trainComputeSeconds, 0)} s (CPU time ${fmt(trainCpuSeconds, 0)} s; wall / CPU = ${fmt(trainSeconds / trainCpuSeconds, 2)}${trainSeconds / trainCpuSeconds > 1.2 ? ': the machine was shared' : ''})`],
          ['optimizer steps', fmt(steps)],
          ['throughput, step + optimizer + parameter upload', `${fmt(tokensPerSecond)} tokens/s by wall clock, ${fmt(tokensPerComputeSecond)} tokens/s by compute time`],
          [`sample: \`predict('${SAMPLE_PREFIX}', 50)\`, greedy`, `\`${sample}\``],
        ],
        ['l', 'l'],
      ),
    );
    md.push('');
    const spark = downsample(curve, 50);
    md.push(
      `Train perplexity, epoch 1 → ${last.epoch} (log scale, ${spark.length} points): \`${sparkline(spark.map((p) => p.trainPerplexity), true)}\` ` +
        `(${curve[0].trainPerplexity.toFixed(1)} → ${last.trainPerplexity.toFixed(2)})`,
    );
    md.push('');
    md.push(
      table(
        ['epoch', 'train perplexity', 'validation perplexity', 'tokens/s (epoch)', 'elapsed s'],
        curve.filter((p) => p.validationPerplexity !== undefined).map((p) => [p.epoch, p.trainPerplexity.toFixed(3), p.validationPerplexity!.toFixed(3), fmt(p.tokensPerSecond), fmt(p.elapsedSeconds, 0)]),
      ),
    );
    md.push('');
    md.push(
      `The validation perplexity is that of ${fmt(corpus.validation.length)} unseen tokens from the same book after training on ${fmt(corpus.train.length)}: a 256-unit LSTM memorises a corpus this small, ` +
        `so the train perplexity approaches 1 while the validation perplexity ${validationPerplexity > lowestValidation * 1.05 ? `rises again after its minimum of ${sig(lowestValidation, 3)}` : `stays far above it (lowest ${sig(lowestValidation, 3)})`}.`,
    );

    return {
      markdown: md.join('\n'),
      result: {
        config: { maxTokens: cfg.maxTokens, valFraction: cfg.valFraction, batchSize: cfg.batchSize, numSteps: cfg.numSteps, hidden: cfg.hidden, optimizer: cfg.optimizer, lr: cfg.lr, clip: cfg.clip, partition: cfg.partition, epochs: cfg.epochs, seed: cfg.seed },
        corpus: { source, totalTokens: corpus.totalTokens, trainTokens: corpus.train.length, validationTokens: corpus.validation.length, vocabSize: corpus.vocab.size, sha1: text.sha1 },
        epochsRun: curve.length,
        stoppedEarly,
        steps,
        epochReachingTarget: reachedAt,
        targetPerplexity: TARGET_PERPLEXITY,
        finalTrainPerplexity: last.trainPerplexity,
        finalTrainPerplexityEval: trainPerplexityEval,
        finalValidationPerplexity: validationPerplexity,
        wallSeconds,
        trainSeconds,
        trainCpuSeconds,
        trainComputeSeconds,
        evalSeconds,
        tokensPerSecond,
        tokensPerComputeSecond,
        sample,
        curve,
      },
    };
  },
};
