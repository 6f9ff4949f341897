/**
 * audit-report: `GET /admin/audit/report?videoId=&subject=&from=&to=&category=`, the
 * accounting of disclosures for admins (shared/audit/report.ts): JSON, or CSV when
 * `Accept` asks for text/csv. Every request is itself audited in the `admin` category
 * before it is answered — who asked (pseudonym, role), for which video, whether by
 * subject — never the answer; a refusal (403) is audited too. The audit volume may be
 * mounted read-only (k8s/): a missing index then costs a verification, never a fact.
 */
import { createAuditLog } from '../../shared/audit/client.js';
import { auditReport } from '../../shared/audit/report.js';
import { reportCsv } from '../../shared/audit/report-format.js';
import { parseReportQuery } from '../../shared/audit/report-request.js';
import { subjectPseudonyms } from '../../shared/audit/subject.js';
import { auditRole, createAuthenticator, requireRole, type Principal } from '../../shared/auth/jwt.js';
import { ConfigError } from '../../shared/platform/config.js';
import { ForbiddenError, MethodNotAllowedError, NotFoundError, ServiceUnavailableError } from '../../shared/platform/errors.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { clientIp, sendJson } from '../../shared/platform/http.js';
import { createRedis } from '../../shared/platform/redis.js';

export default defineFunction(({ config, log, onShutdown }) => {
  if (!config.auditSigningKey) throw new ConfigError('AUDIT_SIGNING_KEY', 'is required to verify the chain a report is read from');
  const signingKey = config.auditSigningKey;
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'audit-report', log });
  onShutdown(async () => void (await redis.quit()));
  const audit = createAuditLog(config, redis, log);
  onShutdown(() => audit.close());

  return async (req, res, ctx) => {
    const url = new URL(req.url ?? '/', 'http://local');
    if (url.pathname !== '/admin/audit/report') throw new NotFoundError('no such route');
    ctx.route = `${req.method} /admin/audit/report`;
    if (req.method !== 'GET') throw new MethodNotAllowedError(['GET']);
    const principal = await auth.authenticate(req);
    const asked = { videoId: url.searchParams.get('videoId'), bySubject: url.searchParams.has('subject') };
    const record = async (outcome: 'success' | 'denied', who: Principal, reason: string | null) => {
      try {
        await audit.record({
          category: 'admin',
          action: asked.bySubject ? 'audit.report.subject' : 'audit.report',
          outcome,
          reason,
          actor: { userId: who.userId, role: auditRole(who) },
          videoId: outcome === 'success' ? (asked.videoId ?? null) : null,
          clientIp: clientIp(req, config.trustedProxies),
          requestId: ctx.requestId,
        });
      } catch (err) {
        log.error({ err: (err as Error).message }, 'audit entry could not be recorded; refusing the report');
        throw new ServiceUnavailableError('the audit log is unavailable', 'audit_unavailable');
      }
    };
    try {
      requireRole(principal, 'admin');
    } catch (err) {
      if (err instanceof ForbiddenError) await record('denied', principal, 'not_admin');
      throw err;
    }
    const query = parseReportQuery(url.searchParams, (subject) => subjectPseudonyms(config, subject));
    await record('success', principal, null);
    // A read-only audit volume (k8s/) cannot take an index: the write is skipped, the report the same.
    const report = await auditReport(config.auditDir, signingKey, query, { buildIndex: true });
    if (/\btext\/csv\b/.test(req.headers.accept ?? '')) {
      res.writeHead(200, { 'Content-Type': 'text/csv; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(reportCsv(report));
      return;
    }
    sendJson(res, 200, report, { 'Cache-Control': 'no-store' });
  };
});
