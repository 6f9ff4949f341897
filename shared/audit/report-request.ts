/**
 * `GET /admin/audit/report?videoId=&subject=&from=&to=&category=`: the query as the
 * report reads it. `subject` is the raw subject (the JWT `sub` as issued), turned into
 * its pseudonyms here and never stored or logged (the runtime logs the route, never the
 * URI; ingress-nginx logs no query string). Bad input is a 400 naming the parameter.
 */
import { BadRequestError } from '../platform/errors.js';
import { isVideoId } from '../video/store.js';
import { AUDIT_CATEGORIES, type AuditCategory } from './entry.js';
import type { ReportQuery } from './report.js';

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const KNOWN = new Set(['videoId', 'subject', 'from', 'to', 'category']);
/** Far above any IdP's subject (auth/jwt.ts MAX_SUBJECT_LENGTH). */
const MAX_SUBJECT = 1024;

export function parseReportQuery(params: URLSearchParams, pseudonyms: (subject: string) => string[]): ReportQuery {
  for (const key of params.keys()) if (!KNOWN.has(key)) throw new BadRequestError(`unknown parameter ${key} (known: ${[...KNOWN].join(', ')})`);
  for (const key of KNOWN) if (params.getAll(key).length > 1) throw new BadRequestError(`${key} may be given once`);
  const videoId = params.get('videoId');
  const subject = params.get('subject');
  const from = params.get('from');
  const to = params.get('to');
  const category = params.get('category');
  if (videoId === null && subject === null) throw new BadRequestError('a report needs videoId or subject');
  if (videoId !== null && !isVideoId(videoId)) throw new BadRequestError('videoId must be a video id (a lowercase UUID)');
  if (subject !== null && (subject === '' || subject.length > MAX_SUBJECT)) throw new BadRequestError(`subject must be 1 to ${MAX_SUBJECT} characters`);
  if (from !== null && !DATE.test(from)) throw new BadRequestError('from must be YYYY-MM-DD');
  if (to !== null && !DATE.test(to)) throw new BadRequestError('to must be YYYY-MM-DD');
  if (from !== null && to !== null && from > to) throw new BadRequestError('from must not be after to');
  if (category !== null && !(AUDIT_CATEGORIES as readonly string[]).includes(category)) throw new BadRequestError(`category must be one of ${AUDIT_CATEGORIES.join(', ')}`);
  return {
    ...(videoId !== null ? { videoId } : {}),
    ...(subject !== null ? { subjects: pseudonyms(subject) } : {}),
    ...(from !== null ? { from } : {}),
    ...(to !== null ? { to } : {}),
    ...(category !== null ? { category: category as AuditCategory } : {}),
  };
}
