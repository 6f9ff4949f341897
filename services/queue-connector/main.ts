/**
 * The queue connector process (a Deployment in k8s/; started by `npm start` too).
 * SIGTERM stops reading and leaves in-flight jobs unacked: the transcoders keep
 * working under their leases and another connector takes the jobs over.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createAuditLog } from '../../shared/audit/client.js';
import { loadConfigOrExit } from '../../shared/platform/config.js';
import { stopWithParent } from '../../shared/platform/lifecycle.js';
import { createLogger } from '../../shared/platform/log.js';
import { MediaStore } from '../../shared/video/store.js';
import { healthReport } from '../../shared/platform/health.js';
import { initMetrics, serveMetrics } from '../../shared/platform/metrics.js';
import { attachMirror } from '../../shared/mirror/attach.js';
import { createRedis } from '../../shared/platform/redis.js';
import { registerQueueMetrics, TranscodeQueue } from '../../shared/transcode/queue.js';
import { QueueRecovery } from '../../shared/transcode/recovery.js';
import { QueueConnector } from '../../shared/transcode/connector.js';
import { JobLife } from '../../shared/transcode/job.js';
import { SubscriberDirectory } from '../../shared/transcode/subscribers.js';

// The connector signs nothing: it needs Redis, the gateway and the media volume, not HMAC_SECRET.
const config = loadConfigOrExit({ require: [] });
const log = createLogger('queue-connector', config.logLevel);
initMetrics('queue-connector');
const redis = createRedis(config, { name: 'queue-connector', log });
registerQueueMetrics(redis);
const blocking = createRedis(config, { name: 'queue-connector:read', blocking: true, log });

const consumer = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
const audit = createAuditLog(config, redis, log);
const store = new MediaStore(config.videoDir, redis);
const mirror = attachMirror(store, redis, config, log);
const queue = new TranscodeQueue(redis, blocking, consumer);
const connector = new QueueConnector({
  config,
  life: new JobLife({ config, queue, store, audit, log }),
  recovery: new QueueRecovery({ redis, queue, store, audit, log, leaseMs: config.transcode.leaseSeconds * 1000 }),
  log,
  directory: new SubscriberDirectory(config, log),
});

const port = config.transcode.connectorMetricsPort;
const metricsServer = config.metricsEnabled ? serveMetrics(port, config.host, () => healthReport('queue-connector')) : null;

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: in-flight jobs stay pending for another connector');
  blocking.disconnect(); // ends a blocked XREADGROUP now
  await connector.stop();
  metricsServer?.close();
  await audit.close();
  await mirror?.close();
  redis.disconnect();
  process.exit(0);
}
process.once('SIGTERM', () => void stop('SIGTERM'));
process.once('SIGINT', () => void stop('SIGINT'));
stopWithParent((reason) => void stop(reason));

try {
  await connector.run();
} catch (err) {
  if (!stopping) {
    log.fatal({ err }, 'queue connector failed');
    process.exit(1);
  }
}
