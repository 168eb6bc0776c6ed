/**
 * A V8 CPU profile of this process (node:inspector), summarised as self time
 * by function: where the coordinator's CPU goes while a benchmark runs.
 */
import inspector from 'node:inspector';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileRow {
  fn: string;
  where: string;
  ms: number;
  share: number;
}

function post<T>(session: inspector.Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => session.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as T))));
}

/** Where a function lives, shortened: the package for node_modules, the repository path otherwise. */
function shortWhere(url: string, repoRoot: string): string {
  if (!url) return '(native)';
  const p = url.replace(/^file:\/\//, '');
  const nm = p.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = p.slice(nm + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (p.startsWith('node:')) return p;
  return path.relative(repoRoot, p) || p;
}

export class CpuProfiler {
  private readonly session = new inspector.Session();

  async start(intervalUs = 200): Promise<void> {
    this.session.connect();
    await post(this.session, 'Profiler.enable');
    await post(this.session, 'Profiler.setSamplingInterval', { interval: intervalUs });
    await post(this.session, 'Profiler.start');
  }

  /** Self time by function, largest first; `repoRoot` shortens file names. */
  async stop(repoRoot: string, top = 15): Promise<{ totalMs: number; rows: ProfileRow[] }> {
    const { profile } = await post<{ profile: Profile }>(this.session, 'Profiler.stop');
    await post(this.session, 'Profiler.disable');
    this.session.disconnect();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const self = new Map<number, number>();
    const samples = profile.samples ?? [];
    const deltas = profile.timeDeltas ?? [];
    for (let i = 0; i < samples.length; i++) self.set(samples[i], (self.get(samples[i]) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0) / 1000);
    const agg = new Map<string, { fn: string; where: string; ms: number }>();
    let total = 0;
    for (const [id, ms] of self) {
      const n = byId.get(id)!;
      const fn = n.callFrame.functionName || '(anonymous)';
      if (fn === '(idle)' || fn === '(program)') continue;
      const where = fn === '(garbage collector)' ? 'V8' : shortWhere(n.callFrame.url, repoRoot);
      const key = `${fn}@${where}`;
      const a = agg.get(key) ?? { fn, where, ms: 0 };
      a.ms += ms;
      agg.set(key, a);
      total += ms;
    }
    const rows = [...agg.values()].sort((a, b) => b.ms - a.ms).slice(0, top).map((r) => ({ ...r, share: r.ms / total }));
    return { totalMs: total, rows };
  }
}
