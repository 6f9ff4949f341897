/**
 * The audit writer service: the one process that appends to the audit files
 * (see shared/audit/writer.ts). Run one or more replicas; the lease lets one
 * write while the others stand by. With AUDIT_INTAKE_PORT it also takes events
 * directly from the functions (shared/audit/intake.ts), while it holds the
 * lease, provided AUDIT_INTAKE_KEY is set. No HTTP port, except /metrics when AUDIT_METRICS_PORT is set.
 */
import { intakeKey } from '../../shared/audit/direct.js';
import { AuditIntake } from '../../shared/audit/intake.js';
import { AuditWriter } from '../../shared/audit/writer.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { stopWithParent } from '../../shared/platform/lifecycle.js';
import { createLogger } from '../../shared/platform/log.js';
import { healthReport } from '../../shared/platform/health.js';
import { initMetrics, serveMetrics } from '../../shared/platform/metrics.js';
import { createRedis, replicasToConfirm } from '../../shared/platform/redis.js';

const config = loadConfigOrExit({ require: ['AUDIT_SIGNING_KEY'] });
const log = createLogger('audit-writer', config.logLevel);
initMetrics('audit-writer');

const redis = createRedis(config, { name: 'audit-writer' });
const reader = createRedis(config, { name: 'audit-writer:reader', blocking: true });
for (const conn of [redis, reader]) conn.on('error', (err: Error) => log.debug({ err: err.message }, 'redis connection error'));

const intakePort = config.auditIntakePort;
const intakeSecret = config.auditIntakeKey;
const intake: AuditIntake | null =
  intakePort && intakeSecret
    ? new AuditIntake({ host: config.host, port: intakePort, key: intakeKey(intakeSecret), log, idleMs: config.auditIntakeIdleMs, sequence: (events) => writer.sequenceDirect(events) })
    : null;
// Said once: an intake without its own secret would take entries from anyone who reaches the port.
if (intakePort && !intakeSecret) log.warn({ port: intakePort }, 'audit intake not opened: AUDIT_INTAKE_KEY is not set; function processes use the Redis stream');

const writer = new AuditWriter({
  auditDir: config.auditDir,
  signingKey: config.auditSigningKey!,
  redis,
  reader,
  log,
  leaseMs: config.auditWriterLeaseMs,
  leaseReplicas: replicasToConfirm(config),
  checkpointEveryMs: config.auditCheckpointIntervalMs,
  onActive: intake ? (active) => (active ? intake.open() : intake.close()) : undefined,
});

const metricsServer = config.metricsEnabled ? serveMetrics(config.auditMetricsPort, config.host, () => healthReport('audit-writer')) : null;

let stopping = false;
function stop(signal: string): void {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: finishing the batch in hand and writing checkpoints');
  void writer.stop().finally(() => {
    metricsServer?.close();
    redis.disconnect();
    reader.disconnect();
    process.exit(0);
  });
}
process.once('SIGTERM', () => stop('SIGTERM'));
process.once('SIGINT', () => stop('SIGINT'));
stopWithParent(stop);

log.info({ auditDir: config.auditDir }, 'audit writer starting');
await writer.start();
