/**
 * The Kubernetes API server's own validation of the objects k8s/ renders, the rules that JSON
 * schemas (kubeconform, kubernetes-models) cannot express: a cluster refuses an object that
 * breaks them with `422 Invalid`, so `kubectl apply` fails where every schema check passed.
 *
 * Ported from Kubernetes v1.32 (the API server `kubectl apply --dry-run=server` meets):
 * - k8s.io/apimachinery/pkg/util/validation/validation.go: IsDNS1123Label, IsDNS1123Subdomain,
 *   IsDNS1035Label, IsQualifiedName, IsValidLabelValue, IsValidPortNum, IsValidPortName
 * - k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go: ValidateLabels,
 *   ValidateLabelSelector; k8s.io/apimachinery/pkg/api/validation/objectmeta.go: annotation keys
 * - pkg/apis/networking/validation/validation.go: validateIngressRules, validateHTTPIngressPath,
 *   validateIngressBackend, validateIngressTLS (invalidPathSequences, invalidPathSuffixes)
 * - pkg/apis/core/validation/validation.go: object names per kind (ValidateServiceName is a
 *   DNS-1035 label, namespaces DNS-1123 labels), container and volume names, container ports
 * - pkg/apis/apps/validation/validation.go, pkg/apis/batch/validation/validation.go: a workload's
 *   selector must be non-empty and match its pod template's labels (and is immutable after
 *   creation, so a selector change needs a new object); a CronJob name is at most 52 characters
 * Each problem reads as the API server would answer: `<field>: Invalid value: "<v>": <why>`.
 */
import type { Manifest } from './deployment.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const WILDCARD_DNS1123_SUBDOMAIN = /^\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const PORT_NAME_CHARS = /^[-a-z0-9]+$/;
const INVALID_PATH_SEQUENCES = ['//', '/./', '/../', '%2f', '%2F'];
const INVALID_PATH_SUFFIXES = ['/..', '/.'];
const PATH_TYPES = ['Exact', 'ImplementationSpecific', 'Prefix'];
/** Kinds whose pod template's labels the selector must match (apps/v1 and batch/v1 Job). */
const SELECTING_WORKLOADS = ['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet'];

const invalid = (field: string, value: unknown, why: string) => `${field}: Invalid value: ${JSON.stringify(value)}: ${why}`;
const required = (field: string, why = 'Required value') => `${field}: Required value${why === 'Required value' ? '' : `: ${why}`}`;

/** A length bound and a pattern, each broken one reported as the API server words it. */
const bounded = (max: number, pattern: RegExp, message: string) => (v: string): string[] => [
  ...(v.length > max ? [`must be no more than ${max} characters`] : []),
  ...(pattern.test(v) ? [] : [message]),
];
const dns1123Label = bounded(63, DNS1123_LABEL, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character");
const dns1123Subdomain = bounded(253, DNS1123_SUBDOMAIN, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character");
const dns1035Label = bounded(63, DNS1035_LABEL, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character");
const labelValue = bounded(63, LABEL_VALUE, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");

/** IsQualifiedName: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name ≤ 63 characters. */
function qualifiedName(v: string): string[] {
  const parts = v.split('/');
  if (parts.length > 2) return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', with an optional DNS subdomain prefix and '/'"];
  const name = parts.at(-1)!;
  const out: string[] = [];
  if (parts.length === 2) {
    if (parts[0]!.length === 0) out.push('prefix part must be non-empty');
    else out.push(...dns1123Subdomain(parts[0]!).map((m) => `prefix part ${m}`));
  }
  if (name.length === 0) out.push('name part must be non-empty');
  else if (name.length > 63) out.push('name part must be no more than 63 characters');
  if (name.length > 0 && !QUALIFIED_NAME.test(name)) out.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
  return out;
}

function portNumber(v: unknown): string[] {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535 ? [] : ['must be between 1 and 65535, inclusive'];
}

/** IsValidPortName: an IANA service name. */
function portName(v: string): string[] {
  const out: string[] = [];
  if (v.length > 15) out.push('must be no more than 15 characters');
  if (!PORT_NAME_CHARS.test(v)) out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
  if (v.includes('--')) out.push("must not contain consecutive hyphens");
  if (!/[a-z]/.test(v)) out.push('must contain at least one letter (a-z)');
  if (v.startsWith('-') || v.endsWith('-')) out.push('must not begin or end with a hyphen');
  return out;
}

const check = (field: string, value: string, rule: (v: string) => string[]) => rule(value).map((why) => invalid(field, value, why));

function labels(field: string, map: Record<string, unknown> | undefined): string[] {
  return Object.entries(map ?? {}).flatMap(([k, v]) => [...check(field, k, qualifiedName), ...check(field, String(v), labelValue)]);
}

/** The name rule per kind (core and apps validation name most objects by DNS subdomain). */
function nameRule(kind: string): (v: string) => string[] {
  if (kind === 'Service') return dns1035Label;
  if (kind === 'Namespace') return dns1123Label;
  if (kind === 'CronJob') return (v) => [...dns1123Subdomain(v), ...(v.length > 52 ? ['must be no more than 52 characters'] : [])];
  return dns1123Subdomain;
}

function objectMeta(doc: Manifest): string[] {
  const meta = (doc.metadata ?? {}) as Manifest;
  const out: string[] = [];
  if (!meta.name) out.push(required('metadata.name', 'name or generateName is required'));
  else out.push(...check('metadata.name', meta.name as string, nameRule(doc.kind as string)));
  if (meta.namespace !== undefined) out.push(...check('metadata.namespace', meta.namespace as string, dns1123Label));
  out.push(...labels('metadata.labels', meta.labels));
  for (const key of Object.keys(meta.annotations ?? {})) out.push(...check('metadata.annotations', key.toLowerCase(), qualifiedName));
  return out;
}

/** ValidateLabelSelector: matchLabels as labels, matchExpressions keys and operators. */
function selector(field: string, sel: Manifest): string[] {
  const out = labels(`${field}.matchLabels`, sel.matchLabels);
  ((sel.matchExpressions ?? []) as Manifest[]).forEach((e, i) => {
    const at = `${field}.matchExpressions[${i}]`;
    out.push(...check(`${at}.key`, String(e.key ?? ''), qualifiedName));
    if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(e.operator)) out.push(invalid(`${at}.operator`, e.operator, 'not a valid selector operator'));
  });
  return out;
}

/** Whether a selector selects a set of labels (matchLabels and matchExpressions). */
function selects(sel: Manifest, podLabels: Record<string, string>): boolean {
  const byLabels = Object.entries((sel.matchLabels ?? {}) as Record<string, string>).every(([k, v]) => podLabels[k] === v);
  const byExpressions = ((sel.matchExpressions ?? []) as Manifest[]).every((e) => {
    const has = Object.hasOwn(podLabels, e.key);
    const values = (e.values ?? []) as string[];
    if (e.operator === 'In') return has && values.includes(podLabels[e.key]!);
    if (e.operator === 'NotIn') return !has || !values.includes(podLabels[e.key]!);
    return e.operator === 'Exists' ? has : !has;
  });
  return byLabels && byExpressions;
}

/** `claimed`: a StatefulSet's volumeClaimTemplates, volumes its containers may mount too. */
function podSpec(field: string, spec: Manifest, claimed: string[]): string[] {
  const out: string[] = [];
  const containers = [...((spec.initContainers ?? []) as Manifest[]), ...((spec.containers ?? []) as Manifest[])];
  const names = new Set<string>();
  containers.forEach((c, i) => {
    const at = `${field}.containers[${i}]`;
    out.push(...check(`${at}.name`, String(c.name ?? ''), dns1123Label));
    if (names.has(c.name)) out.push(`${at}.name: Duplicate value: ${JSON.stringify(c.name)}`);
    names.add(c.name);
    if (!c.image) out.push(required(`${at}.image`));
    ((c.ports ?? []) as Manifest[]).forEach((p, j) => {
      out.push(...portNumber(p.containerPort).map((why) => invalid(`${at}.ports[${j}].containerPort`, p.containerPort, why)));
      if (p.name !== undefined) out.push(...check(`${at}.ports[${j}].name`, String(p.name), portName));
    });
  });
  const volumes = new Set<string>(claimed);
  ((spec.volumes ?? []) as Manifest[]).forEach((v, i) => {
    out.push(...check(`${field}.volumes[${i}].name`, String(v.name ?? ''), dns1123Label));
    if (volumes.has(v.name)) out.push(`${field}.volumes[${i}].name: Duplicate value: ${JSON.stringify(v.name)}`);
    volumes.add(v.name);
  });
  containers.forEach((c, i) =>
    ((c.volumeMounts ?? []) as Manifest[]).forEach((m, j) => {
      if (!volumes.has(m.name)) out.push(`${field}.containers[${i}].volumeMounts[${j}].name: Not found: ${JSON.stringify(m.name)}`);
    }),
  );
  return out;
}

/** A workload's pod template: labels, pod spec, and the selector that must select it. */
function workload(doc: Manifest): string[] {
  const kind = doc.kind as string;
  const spec = (kind === 'CronJob' ? doc.spec?.jobTemplate?.spec : doc.spec) as Manifest | undefined;
  const template = spec?.template as Manifest | undefined;
  if (!template) return [];
  const base = kind === 'CronJob' ? 'spec.jobTemplate.spec' : 'spec';
  const out = [...labels(`${base}.template.metadata.labels`, template.metadata?.labels), ...podSpec(`${base}.template.spec`, (template.spec ?? {}) as Manifest, ((spec!.volumeClaimTemplates ?? []) as Manifest[]).map((c) => c.metadata?.name as string))];
  if (SELECTING_WORKLOADS.includes(kind)) {
    const sel = spec!.selector as Manifest | undefined;
    if (!sel || (Object.keys(sel.matchLabels ?? {}).length === 0 && (sel.matchExpressions ?? []).length === 0)) out.push(invalid('spec.selector', sel ?? {}, 'empty selector is invalid for deployment'));
    else {
      out.push(...selector('spec.selector', sel));
      if (!selects(sel, (template.metadata?.labels ?? {}) as Record<string, string>)) out.push(invalid('spec.template.metadata.labels', template.metadata?.labels ?? {}, '`selector` does not match template `labels`'));
    }
  }
  return out;
}

/** validateIngressBackend: a service backend with a DNS-1035 name and one port, name or number. */
function ingressBackend(field: string, backend: Manifest | undefined): string[] {
  if (!backend) return [required(field)];
  if (backend.resource && backend.service) return [invalid(field, '', 'cannot set both resource and service backends')];
  if (backend.resource) return backend.resource.kind && backend.resource.name ? [] : [required(`${field}.resource`, 'kind and name are required')];
  if (!backend.service) return [invalid(field, '', 'resource or service backend is required')];
  const out: string[] = [];
  const { name, port = {} } = backend.service as Manifest;
  if (!name) out.push(required(`${field}.service.name`));
  else out.push(...check(`${field}.service.name`, name as string, dns1035Label));
  if (port.name && port.number) out.push(invalid(field, '', 'cannot set both port name & port number'));
  else if (port.name) out.push(...check(`${field}.service.port.name`, port.name as string, portName));
  else if (port.number) out.push(...portNumber(port.number).map((why) => invalid(`${field}.service.port.number`, port.number, why)));
  else out.push(required(field, 'port name or number is required'));
  return out;
}

/** validateHTTPIngressPath: the rule `kubectl apply` trips over when an ImplementationSpecific regex path does not start with `/`. */
export function ingressPathProblems(field: string, p: Manifest): string[] {
  const out: string[] = [];
  const value = String(p.path ?? '');
  if (p.pathType === undefined) return [required(`${field}.pathType`, 'pathType must be specified')];
  if (p.pathType === 'Exact' || p.pathType === 'Prefix') {
    if (!value.startsWith('/')) out.push(invalid(`${field}.path`, value, 'must be an absolute path'));
    if (value.length > 0) {
      for (const seq of INVALID_PATH_SEQUENCES) if (value.includes(seq)) out.push(invalid(`${field}.path`, value, `must not contain '${seq}'`));
      for (const suffix of INVALID_PATH_SUFFIXES) if (value.endsWith(suffix)) out.push(invalid(`${field}.path`, value, `cannot end with '${suffix}'`));
    }
  } else if (p.pathType === 'ImplementationSpecific') {
    if (value.length > 0 && !value.startsWith('/')) out.push(invalid(`${field}.path`, value, 'must be an absolute path'));
  } else {
    out.push(`${field}.pathType: Unsupported value: ${JSON.stringify(p.pathType)}: supported values: ${PATH_TYPES.map((t) => `"${t}"`).join(', ')}`);
  }
  return [...out, ...ingressBackend(`${field}.backend`, p.backend)];
}

function host(field: string, value: string): string[] {
  const out: string[] = [];
  if (/^[0-9.]+$/.test(value) || value.includes(':')) out.push(invalid(field, value, 'must be a DNS name, not an IP address'));
  if (value.includes('*')) {
    if (!WILDCARD_DNS1123_SUBDOMAIN.test(value)) out.push(invalid(field, value, "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain"));
  } else out.push(...check(field, value, dns1123Subdomain));
  return out;
}

/** ValidateIngressSpec: rules (hosts, paths, backends), the default backend, TLS and the class name. */
function ingress(doc: Manifest): string[] {
  const spec = (doc.spec ?? {}) as Manifest;
  const rules = (spec.rules ?? []) as Manifest[];
  const out: string[] = [];
  if (rules.length === 0 && !spec.defaultBackend) out.push(invalid('spec', rules, 'either `defaultBackend` or `rules` must be specified'));
  if (spec.defaultBackend) out.push(...ingressBackend('spec.defaultBackend', spec.defaultBackend));
  rules.forEach((r, i) => {
    if (r.host) out.push(...host(`spec.rules[${i}].host`, r.host as string));
    if (!r.http) return;
    const paths = (r.http.paths ?? []) as Manifest[];
    if (paths.length === 0) out.push(required(`spec.rules[${i}].http.paths`));
    paths.forEach((p, j) => out.push(...ingressPathProblems(`spec.rules[${i}].http.paths[${j}]`, p)));
  });
  ((spec.tls ?? []) as Manifest[]).forEach((t, i) => {
    ((t.hosts ?? []) as string[]).forEach((h, j) => out.push(...(h.includes('*') ? host(`spec.tls[${i}].hosts[${j}]`, h) : check(`spec.tls[${i}].hosts[${j}]`, h, dns1123Subdomain))));
    if (t.secretName) out.push(...check(`spec.tls[${i}].secretName`, t.secretName as string, dns1123Subdomain));
  });
  if (spec.ingressClassName !== undefined) out.push(...check('spec.ingressClassName', spec.ingressClassName as string, dns1123Subdomain));
  const annotated = doc.metadata?.annotations?.['kubernetes.io/ingress.class'];
  if (annotated !== undefined && spec.ingressClassName !== undefined && annotated !== spec.ingressClassName) {
    out.push(invalid('annotations.kubernetes.io/ingress.class', annotated, 'must match `ingressClassName` when both are specified'));
  }
  return out;
}

/** Every rule above broken by one rendered object, each line naming the object as `Kind namespace/name: field: …`. */
export function apiServerProblems(docs: Manifest[]): string[] {
  return docs.flatMap((doc) => {
    const who = `${doc.kind} ${doc.metadata?.namespace ? `${doc.metadata.namespace}/` : ''}${doc.metadata?.name ?? '(unnamed)'}`;
    const problems = [...objectMeta(doc), ...workload(doc), ...(doc.kind === 'Ingress' ? ingress(doc) : [])];
    return problems.map((p) => `${who}: ${p}`);
  });
}
