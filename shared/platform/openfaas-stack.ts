/** Reads stack.yml (faas-cli's format): the functions, their environment, labels and annotations. */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

export interface StackFunction {
  name: string;
  lang: string;
  handler: string;
  image: string;
  environment: Record<string, string>;
  secrets: string[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  buildArgs: Record<string, string>;
}

export interface Stack {
  gateway: string;
  templates: { name: string; source: string }[];
  copy: string[];
  functions: StackFunction[];
}

const strings = (o: unknown): Record<string, string> =>
  Object.fromEntries(Object.entries((o ?? {}) as Record<string, unknown>).map(([k, v]) => [k, String(v)]));

export function readStack(file: string): Stack {
  const doc = parse(readFileSync(file, 'utf8')) as {
    provider?: { gateway?: string };
    configuration?: { templates?: { name: string; source: string }[]; copy?: string[] };
    functions?: Record<string, Record<string, unknown>>;
  };
  return {
    gateway: doc.provider?.gateway ?? '',
    templates: doc.configuration?.templates ?? [],
    copy: doc.configuration?.copy ?? [],
    functions: Object.entries(doc.functions ?? {}).map(([name, f]) => ({
      name,
      lang: String(f.lang ?? ''),
      handler: String(f.handler ?? ''),
      image: String(f.image ?? ''),
      environment: strings(f.environment),
      secrets: ((f.secrets as string[] | undefined) ?? []).map(String),
      labels: strings(f.labels),
      annotations: strings(f.annotations),
      buildArgs: strings(f.build_args),
    })),
  };
}

/**
 * Functions subscribed to a connector topic (the `topic` annotation, comma-separated),
 * from stack.yml or from the gateway's `/system/functions` listing (same shape).
 */
export function subscribers(stack: { functions: { name: string; annotations?: Record<string, string> | null }[] }, topic: string): string[] {
  return stack.functions
    .filter((f) => (f.annotations?.topic ?? '').split(',').map((t) => t.trim()).includes(topic))
    .map((f) => f.name);
}
