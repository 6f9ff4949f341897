/**
 * The webhook sender service: delivers the webhook outbox to the endpoints
 * (shared/webhooks/sender.ts). Any number of replicas: a delivery is claimed by one at a time.
 * The only PulseVault process with egress beyond the cluster (k8s/ NetworkPolicies). No HTTP
 * port, except /metrics when WEBHOOK_METRICS_PORT is set.
 */
import { ConfigError, loadConfigOrExit } from '../../shared/platform/config.js';
import { healthReport } from '../../shared/platform/health.js';
import { stopWithParent } from '../../shared/platform/lifecycle.js';
import { createLogger } from '../../shared/platform/log.js';
import { initMetrics, serveMetrics } from '../../shared/platform/metrics.js';
import { createRedis } from '../../shared/platform/redis.js';
import { parseAllowList } from '../../shared/webhooks/allow-list.js';
import { Deliverer } from '../../shared/webhooks/deliver.js';
import { endpointStoreFromConfig } from '../../shared/webhooks/endpoints.js';
import { webhooksDir } from '../../shared/webhooks/events.js';
import { WebhookSender } from '../../shared/webhooks/sender.js';

const config = loadConfigOrExit({ require: [] });
// Endpoint secrets are read through the KEK: production without MEDIA_KEK stops here, as a bad variable does.
const endpoints = (() => {
  try {
    return endpointStoreFromConfig(config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(78); // EX_CONFIG
  }
})();
const log = createLogger('webhook-sender', config.logLevel);
initMetrics('webhook-sender');

const redis = createRedis(config, { name: 'webhook-sender', log });
const w = config.webhooks;
const deliverer = new Deliverer(parseAllowList(w.allowedHosts, w.allowedHttpHosts), w.timeoutMs, config.nodeEnv === 'production');
const sender = new WebhookSender({
  redis,
  webhooksDir: webhooksDir(config.videoDir),
  endpoints,
  deliverer,
  log,
  retryBaseMs: w.retryBaseMs,
  retryForMs: w.retryForMs,
  // Longer than an attempt may take: a claim lapses only when its sender is gone.
  claimMs: w.timeoutMs * 3,
  pollMs: 500,
});
const metricsServer = config.metricsEnabled ? serveMetrics(w.metricsPort, config.host, () => healthReport('webhook-sender')) : null;

let stopping = false;
function stop(signal: string): void {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: finishing the deliveries in flight');
  void sender.stop().finally(() => {
    deliverer.close();
    metricsServer?.close();
    redis.disconnect();
    process.exit(0);
  });
}
process.once('SIGTERM', () => stop('SIGTERM'));
process.once('SIGINT', () => stop('SIGINT'));
stopWithParent(stop);

log.info({ allowListed: w.allowedHosts.length }, 'webhook sender starting');
sender.start();
