/**
 * scripts/api-server-rules.ts refuses what the Kubernetes API server refuses, with its wording.
 * The cases are the API server's own (Kubernetes v1.32 validation_test.go for Ingress paths,
 * names, labels and selectors) plus the Ingress paths k8s/ingress.yaml had before, which a
 * cluster answered with `must be an absolute path`.
 */
import { describe, expect, it } from 'vitest';
import { apiServerProblems, ingressPathProblems } from '../scripts/api-server-rules.js';

const backend = { service: { name: 'finalize', port: { number: 8080 } } };
const ingress = (path: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'Ingress',
  metadata: { name: 'pulsevault-finalize', namespace: 'openfaas-fn' },
  spec: { ingressClassName: 'nginx', rules: [{ host: 'videos.hospital.test', http: { paths: [{ backend, ...path }] } }], ...extra },
});
const deployment = (selector: Record<string, unknown>, labels: Record<string, string>, name = 'queue-connector') => ({
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name, namespace: 'openfaas-fn' },
  spec: { selector, template: { metadata: { labels }, spec: { containers: [{ name: 'queue-connector', image: 'pulsevault-services:1.0.0' }] } } },
});

describe('Ingress paths (validateHTTPIngressPath)', () => {
  it.each([
    ['(/uploads/finalize)$'],
    ['(?!/uploads/finalize$)(/uploads(/[^/]*)?)$'],
    ['(?!/media/videos/[0-9a-fA-F-]{36}/(?:metadata|renditions)$)(/media/videos/[^/]+/.+)$'],
  ])('refuses the regex path %s that does not start with a slash, as a cluster did', (path) => {
    expect(apiServerProblems([ingress({ path, pathType: 'ImplementationSpecific' })])).toEqual([
      `Ingress openfaas-fn/pulsevault-finalize: spec.rules[0].http.paths[0].path: Invalid value: ${JSON.stringify(path)}: must be an absolute path`,
    ]);
  });

  it('accepts an absolute regex path and an empty ImplementationSpecific path', () => {
    expect(ingressPathProblems('p', { path: '/(?!uploads/finalize$)uploads(/[^/]*)?$', pathType: 'ImplementationSpecific', backend })).toEqual([]);
    expect(ingressPathProblems('p', { pathType: 'ImplementationSpecific', backend })).toEqual([]);
  });

  it('Exact and Prefix paths must be absolute and free of //, /./, /../, %2f and a /. or /.. end', () => {
    expect(ingressPathProblems('p', { path: '', pathType: 'Prefix', backend })).toEqual(['p.path: Invalid value: "": must be an absolute path']);
    expect(ingressPathProblems('p', { path: '/a//b', pathType: 'Exact', backend })).toEqual(['p.path: Invalid value: "/a//b": must not contain \'//\'']);
    expect(ingressPathProblems('p', { path: '/a%2Fb/..', pathType: 'Prefix', backend })).toEqual([
      'p.path: Invalid value: "/a%2Fb/..": must not contain \'%2F\'',
      'p.path: Invalid value: "/a%2Fb/..": cannot end with \'/..\'',
    ]);
    expect(ingressPathProblems('p', { path: '/media/', pathType: 'Prefix', backend })).toEqual([]);
  });

  it('a pathType is required and must be one of the three', () => {
    expect(ingressPathProblems('p', { path: '/a', backend })).toEqual(['p.pathType: Required value: pathType must be specified']);
    expect(ingressPathProblems('p', { path: '/a', pathType: 'Regex', backend })).toEqual(['p.pathType: Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", "Prefix"']);
  });

  it('a backend Service name is a DNS-1035 label with one port, by name or number', () => {
    expect(ingressPathProblems('p', { path: '/a', pathType: 'Exact', backend: { service: { name: '1finalize', port: { number: 8080 } } } })).toEqual([
      'p.backend.service.name: Invalid value: "1finalize": a DNS-1035 label must consist of lower case alphanumeric characters or \'-\', start with an alphabetic character, and end with an alphanumeric character',
    ]);
    expect(ingressPathProblems('p', { path: '/a', pathType: 'Exact', backend: { service: { name: 'sign', port: { number: 70000 } } } })).toEqual([
      'p.backend.service.port.number: Invalid value: 70000: must be between 1 and 65535, inclusive',
    ]);
    expect(ingressPathProblems('p', { path: '/a', pathType: 'Exact', backend: { service: { name: 'sign', port: {} } } })).toEqual(['p.backend: Required value: port name or number is required']);
  });

  it('hosts and TLS secret names are DNS subdomains; a host is not an IP address', () => {
    expect(apiServerProblems([ingress({ path: '/a', pathType: 'Exact' }, { tls: [{ hosts: ['Videos.hospital.test'], secretName: 'pulsevault_tls' }] })]).map((p) => p.split(': ').slice(1, 3).join(': '))).toEqual([
      'spec.tls[0].hosts[0]: Invalid value',
      'spec.tls[0].secretName: Invalid value',
    ]);
    const ip = ingress({ path: '/a', pathType: 'Exact' });
    ip.spec.rules[0]!.host = '10.0.0.1';
    expect(apiServerProblems([ip])).toContain('Ingress openfaas-fn/pulsevault-finalize: spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address');
  });
});

describe('names, labels and selectors', () => {
  it('object names follow the rule of their kind', () => {
    expect(apiServerProblems([{ kind: 'Service', metadata: { name: 'audit.writer', namespace: 'openfaas-fn' } }])[0]).toMatch(/^Service openfaas-fn\/audit\.writer: metadata\.name: Invalid value: "audit\.writer": a DNS-1035 label/);
    expect(apiServerProblems([{ kind: 'ConfigMap', metadata: { name: 'pulsevault.site', namespace: 'openfaas-fn' } }])).toEqual([]);
    expect(apiServerProblems([{ kind: 'ConfigMap', metadata: { name: 'Pulsevault', namespace: 'openfaas-fn' } }])[0]).toMatch(/a lowercase RFC 1123 subdomain/);
    expect(apiServerProblems([{ kind: 'CronJob', metadata: { name: 'x'.repeat(53), namespace: 'openfaas-fn' } }])[0]).toMatch(/must be no more than 52 characters$/);
  });

  it('label values are at most 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends; keys are qualified names', () => {
    const labelled = (labels: Record<string, string>) => apiServerProblems([{ kind: 'ConfigMap', metadata: { name: 'a', labels } }]);
    expect(labelled({ 'app.kubernetes.io/part-of': 'pulsevault', 'pulsevault.io/media-volume': 'true', empty: '' })).toEqual([]);
    expect(labelled({ version: 'v1.0.0-' })[0]).toMatch(/^ConfigMap a: metadata\.labels: Invalid value: "v1\.0\.0-": a valid label must be an empty string/);
    expect(labelled({ image: 'registry.example.org/pulsevault:1.0' })).toHaveLength(1);
    expect(labelled({ x: 'a'.repeat(64) })[0]).toMatch(/must be no more than 63 characters$/);
    expect(labelled({ 'Bad_Prefix/x': 'a' })[0]).toMatch(/prefix part a lowercase RFC 1123 subdomain/);
  });

  it("a workload's selector must be non-empty and select its pod template's labels", () => {
    expect(apiServerProblems([deployment({ matchLabels: { app: 'queue-connector' } }, { app: 'queue-connector', tier: 'x' })])).toEqual([]);
    expect(apiServerProblems([deployment({ matchLabels: { app: 'queue-connector' } }, { app: 'connector' })])).toEqual([
      'Deployment openfaas-fn/queue-connector: spec.template.metadata.labels: Invalid value: {"app":"connector"}: `selector` does not match template `labels`',
    ]);
    expect(apiServerProblems([deployment({}, { app: 'queue-connector' })])[0]).toMatch(/spec\.selector: Invalid value: \{\}: empty selector is invalid/);
    expect(apiServerProblems([deployment({ matchExpressions: [{ key: 'app', operator: 'In', values: ['queue-connector'] }] }, { app: 'queue-connector' })])).toEqual([]);
  });

  it('container and volume names are DNS-1123 labels; every mount names a volume', () => {
    const d = deployment({ matchLabels: { app: 'a' } }, { app: 'a' });
    const spec = d.spec.template.spec as Record<string, unknown>;
    spec.containers = [{ name: 'Queue_Connector', image: 'i', volumeMounts: [{ name: 'media', mountPath: '/mnt/media' }] }];
    expect(apiServerProblems([d]).map((p) => p.split(': ')[1])).toEqual(['spec.template.spec.containers[0].name', 'spec.template.spec.containers[0].volumeMounts[0].name']);
  });
});
