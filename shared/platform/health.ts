/**
 * What `/_/health` and `/_/ready` (functions) and the services' `/_/health`
 * answer. Always 200 while the process runs: restarting it would not bring
 * Redis back, so probes must not fail over an outage — the body says it instead
 * (`status: degraded`, which connections are down) for people and dashboards.
 * Active: each report does a round trip to Redis within a short deadline
 * (shared/platform/redis.ts redisHealth), so a frozen Redis is `degraded` too.
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

export async function healthReport(name: string): Promise<HealthReport> {
  const redis = await redisHealth();
  if (!redis) return { status: 'ok', function: name };
  return redis.up ? { status: 'ok', function: name, redis: 'up' } : { status: 'degraded', function: name, redis: 'down', redisDown: redis.down };
}
