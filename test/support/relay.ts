/** A `dptrain relay` process for tests: started on port 0, its port and metrics port read from its log. */
import { dptrain, type Proc } from './proc.js';
import { TOKEN, waitFor } from './cluster.js';

export interface RelayProc extends Proc {
  /** The port workers join, once it listens. */
  port: () => Promise<number>;
  /** Its /metrics port (started with --metrics-port 0). */
  metricsPort: () => Promise<number>;
}

export function spawnRelay(coordinator: string, extra: string[] = []): RelayProc {
  const heartbeat = extra.includes('--heartbeat-interval') ? [] : ['--heartbeat-interval', '1'];
  const p = dptrain(['relay', '--coordinator', coordinator, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', ...heartbeat, ...extra], { DPTRAIN_TOKEN: TOKEN });
  const grab = async (re: RegExp, what: string): Promise<number> => {
    await waitFor(() => re.test(p.output()) || p.exitCode() !== null, 60_000, what);
    const m = re.exec(p.output());
    if (!m) throw new Error(`relay exited before ${what}:\n${p.output()}`);
    return Number(m[1]);
  };
  return {
    ...p,
    port: () => grab(/^listening on ws:\/\/[^:]+:(\d+)/m, 'the relay to listen'),
    metricsPort: () => grab(/relay metrics on http:\/\/[^:]+:(\d+)\/metrics/, 'the relay metrics port'),
  };
}
