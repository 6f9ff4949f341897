/**
 * Which functions subscribe to a topic, as OpenFaaS connectors find out (connector-sdk):
 * the gateway's `GET /system/functions` (basic auth) lists each function with its
 * annotations; a function subscribes with `topic: <name>[,<name>…]`. The local
 * gateway serves the same listing built from stack.yml, so one code path covers
 * both; when the gateway cannot be asked, STACK_FILE is read directly.
 */
import type { Config } from '../../shared/platform/config.js';
import type { Logger } from '../../shared/platform/log.js';
import { readStack, subscribers } from '../../shared/platform/openfaas-stack.js';

const CACHE_MS = 10_000;

interface ListedFunction {
  name: string;
  annotations?: Record<string, string> | null;
}

export class SubscriberDirectory {
  private cached: { at: number; functions: ListedFunction[] } | null = null;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {}

  async subscribers(topic: string): Promise<string[]> {
    if (!this.cached || Date.now() - this.cached.at > CACHE_MS) this.cached = { at: Date.now(), functions: await this.list() };
    return subscribers({ functions: this.cached.functions }, topic);
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
