/**
 * webhooks: the admins' webhook endpoints (docs/api.md "Webhooks").
 *   POST   /admin/webhooks                 {url, events} → 201 {id, url, events, createdAt, secret}
 *   GET    /admin/webhooks                 → 200 {endpoints: [...]} (never a secret)
 *   DELETE /admin/webhooks/<id>            → 204
 *   POST   /admin/webhooks/<id>/rotate     → 200 {…, secret}: the previous secret still signs for WEBHOOK_ROTATION_WINDOW
 * Admins only; each change is audited (`webhook.*`, the endpoint's id only) before it is answered.
 * The secret is in the answer of create and rotate, and nowhere else (never a log line).
 * Delivery is the webhook sender's (services/webhook-sender): this function has no egress.
 */
import { createAuditLog } from '../../shared/audit/client.js';
import type { AuditActionOf } from '../../shared/audit/actions.js';
import { auditRole, createAuthenticator, requireRole } from '../../shared/auth/jwt.js';
import { MethodNotAllowedError, NotFoundError, ServiceUnavailableError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { clientIp, readJsonBody, sendJson } from '../../shared/platform/http.js';
import { createRedis } from '../../shared/platform/redis.js';
import { parseAllowList } from '../../shared/webhooks/allow-list.js';
import { endpointStoreFromConfig, endpointView } from '../../shared/webhooks/endpoints.js';

const ROUTE = /^\/admin\/webhooks(?:\/([^/]+)(\/rotate)?)?$/;

export default defineFunction(({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'webhooks', log });
  onShutdown(async () => void (await redis.quit()));
  const audit = createAuditLog(config, redis, log);
  onShutdown(() => audit.close());
  const store = endpointStoreFromConfig(config);
  const allowList = parseAllowList(config.webhooks.allowedHosts, config.webhooks.allowedHttpHosts);
  const production = config.nodeEnv === 'production';

  return async (req, res, ctx) => {
    const url = new URL(req.url ?? '/', 'http://local');
    const m = ROUTE.exec(url.pathname);
    if (!m) throw new NotFoundError('no such route');
    const [, id, rotate] = m;
    ctx.route = `${req.method} /admin/webhooks${id ? '/:id' : ''}${rotate ?? ''}`;
    const allowed = rotate ? ['POST'] : id ? ['DELETE'] : ['GET', 'POST'];
    if (!allowed.includes(req.method ?? '')) throw new MethodNotAllowedError(allowed);
    const principal = await auth.authenticate(req);
    requireRole(principal, 'admin');
    const record = async (action: AuditActionOf<'admin'>, endpointId: string) => {
      try {
        await audit.record({ category: 'admin', action, outcome: 'success', reason: `endpoint.${endpointId}`, actor: { userId: principal.userId, role: auditRole(principal) }, videoId: null, clientIp: clientIp(req, config.trustedProxies), requestId: ctx.requestId });
      } catch (err) {
        log.error({ err: (err as Error).message }, 'audit entry could not be recorded; refusing the change');
        throw new ServiceUnavailableError('the audit log is unavailable', 'audit_unavailable');
      }
    };
    if (rotate) {
      await store.get(id!);
      await record('webhook.rotated', id!);
      const rotated = await store.rotate(id!, config.webhooks.rotationWindowMs);
      sendJson(res, 200, { ...endpointView(rotated), secret: rotated.secrets[0]!.secret }, { 'Cache-Control': 'no-store' });
    } else if (id) {
      await store.get(id);
      await record('webhook.deleted', id);
      await store.remove(id);
      res.writeHead(204, { 'Cache-Control': 'no-store' }).end();
    } else if (req.method === 'GET') {
      sendJson(res, 200, { endpoints: await store.views() }, { 'Cache-Control': 'no-store' });
    } else {
      const created = await store.create(await readJsonBody(req), allowList, production);
      // Audited after the file exists (its id is only known then); an audit outage removes it again.
      try {
        await record('webhook.created', created.id);
      } catch (err) {
        await store.remove(created.id);
        throw err;
      }
      sendJson(res, 201, { ...endpointView(created), secret: created.secrets[0]!.secret }, { 'Cache-Control': 'no-store' });
    }
  };
});
