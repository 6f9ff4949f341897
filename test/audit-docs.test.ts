/**
 * docs/audit.md's reference tables against the code they describe, so a new action or
 * entry field that the docs do not list fails here instead of going unnoticed.
 */
import { describe, expect, it } from 'vitest';
import { AUDIT_ACTIONS } from '../shared/audit/actions.js';
import { auditEntrySchema } from '../shared/audit/entry.js';
import { markedTable } from './helpers/markdown.js';

const unquote = (cell: string): string => cell.replace(/^`(.*)`$/, '$1');

describe('docs/audit.md reference', () => {
  it('lists exactly the actions of AUDIT_ACTIONS, each in its category', () => {
    const documented = markedTable('docs/audit.md', 'audit-actions').map(([action, category]) => [unquote(action!), category]);
    expect(documented).toEqual(Object.entries(AUDIT_ACTIONS));
  });

  it('lists exactly the fields of an entry', () => {
    const documented = markedTable('docs/audit.md', 'audit-entry-fields').map(([field]) => unquote(field!));
    expect(documented.toSorted()).toEqual(Object.keys(auditEntrySchema.shape).toSorted());
  });
});
