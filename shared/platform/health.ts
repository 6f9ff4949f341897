/**
 * What `/_/health` and `/_/ready` (functions) and the services' `/_/health`
 * answer. Always 200 while the process runs: restarting it would not bring
 * Redis back, so probes must not fail over an outage — the body says it instead
 * (`status: degraded`, which connections are down) for people and dashboards.
 */
import { redisHealth } from './redis.js';

export interface HealthReport {
  status: 'ok' | 'degraded';
  function: string;
  /** Absent in a process without Redis. */
  redis?: 'up' | 'down';
  /** The connections not ready, while Redis is away. */
  redisDown?: string[];
}

export function healthReport(name: string): HealthReport {
  const redis = redisHealth();
  if (!redis) return { status: 'ok', function: name };
  return redis.up ? { status: 'ok', function: name, redis: 'up' } : { status: 'degraded', function: name, redis: 'down', redisDown: redis.down };
}
