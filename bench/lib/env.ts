/** The environment header recorded with every section. */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BackendInfo } from '../../src/shared/backend.js';
import type { EnvInfo } from './types.js';

function packageVersion(repoRoot: string, pkg: string): string {
  try {
    const file = path.join(repoRoot, 'node_modules', ...pkg.split('/'), 'package.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

async function backendDetail(backend: BackendInfo): Promise<string> {
  if (backend.name === 'wasm') {
    const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const threads = wasm.getThreadsCount();
    return `SIMD ${simd ? 'on' : 'off'}, ${threads} thread${threads === 1 ? '' : 's'}`;
  }
  if (backend.name === 'tensorflow') return `device ${backend.device}`;
  return '';
}

export async function collectEnv(repoRoot: string, backend: BackendInfo): Promise<EnvInfo> {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    tfjs: packageVersion(repoRoot, '@tensorflow/tfjs'),
    backend: backend.name,
    backendPackage: backend.pkg,
    backendVersion: packageVersion(repoRoot, backend.pkg),
    backendDetail: await backendDetail(backend),
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** One markdown line describing the environment of a section. */
export function envLine(env: EnvInfo, wallSeconds: number, command: string): string {
  const when = env.date.replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  const backend = `${env.backend} (${env.backendPackage} ${env.backendVersion}${env.backendDetail ? `, ${env.backendDetail}` : ''})`;
  return (
    `_Recorded ${when} on ${env.cpu} (${env.cores} cores, ${env.memoryGiB} GiB, ${env.os}) · Node ${env.node} · ` +
    `tfjs ${env.tfjs} · backend ${backend} · load average ${env.loadAverage.map((x) => x.toFixed(2)).join(' / ')} at start · ` +
    `part took ${Math.round(wallSeconds)} s · \`${command}\`_`
  );
}
