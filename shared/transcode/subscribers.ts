/**
 * Which functions subscribe to a topic, as OpenFaaS connectors find out (connector-sdk):
 * the gateway's `GET /system/functions` (basic auth) lists each function with its
 * annotations; a function subscribes with `topic: <name>[,<name>…]`. The local
 * gateway serves the same listing built from stack.yml, so one code path covers
 * both; when the gateway cannot be asked, STACK_FILE is read directly.
 */
import type { Config } from '../platform/config.js';
import type { Logger } from '../platform/log.js';
import { readStack, subscribers } from '../platform/openfaas-stack.js';

const CACHE_MS = 10_000;
/** While a subscribing function has no ready replica (starting, or scaled up from zero), look again soon: its jobs wait on it. */
const NOT_READY_CACHE_MS = 1_000;

interface ListedFunction {
  name: string;
  annotations?: Record<string, string> | null;
  /** OpenFaaS omits it when 0 (omitempty). */
  availableReplicas?: number;
}

export class SubscriberDirectory {
  private cached: { at: number; functions: ListedFunction[] } | null = null;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async subscribers(topic: string): Promise<string[]> {
    return subscribers({ functions: await this.functions() }, topic);
  }

  /**
   * How many jobs of a topic the subscribers can run at once: ready replicas (the gateway's
   * listing) × max_inflight (stack.yml: faas-netes does not list environment variables), for the
   * tightest subscriber (every job goes to each). Infinity when either is unknown.
   */
  async capacity(topic: string): Promise<number> {
    const listed = await this.functions();
    const names = new Set(subscribers({ functions: listed }, topic));
    const environment = new Map(this.config.stackFile ? readStack(this.config.stackFile).functions.map((f) => [f.name, f.environment]) : []);
    const slots = listed
      .filter((f) => names.has(f.name))
      .map((f) => {
        const maxInflight = Number(environment.get(f.name)?.max_inflight ?? 0);
        return maxInflight > 0 && 'replicas' in f ? (f.availableReplicas ?? 0) * maxInflight : Infinity;
      });
    return Math.min(Infinity, ...slots);
  }

  private async functions(): Promise<ListedFunction[]> {
    const maxAge = this.cached?.functions.some((f) => f.annotations?.topic && 'replicas' in f && !f.availableReplicas) ? NOT_READY_CACHE_MS : CACHE_MS;
    if (!this.cached || Date.now() - this.cached.at > maxAge) this.cached = { at: Date.now(), functions: await this.list() };
    return this.cached.functions;
  }

  private async list(): Promise<ListedFunction[]> {
    const { url, user, password } = this.config.gateway;
    try {
      const headers: Record<string, string> = password ? { Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` } : {};
      const res = await fetch(`${url}/system/functions`, { headers, signal: AbortSignal.timeout(5_000) });
      if (!res.ok) throw new Error(`GET /system/functions answered ${res.status}`);
      return (await res.json()) as ListedFunction[];
    } catch (err) {
      if (!this.config.stackFile) throw err;
      this.log.warn({ err: (err as Error).message }, 'gateway listing unavailable; reading STACK_FILE');
      return readStack(this.config.stackFile).functions;
    }
  }
}
