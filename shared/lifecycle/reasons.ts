/**
 * The reason codes of the records lifecycle (docs/api.md "Edit, hold and delete"). Codes, never
 * free text: they go into audit entries and the tombstone, which must carry no PHI.
 */
export const DELETE_REASONS = ['retention_expired', 'patient_request', 'recorded_in_error', 'duplicate', 'other'] as const;
export type DeleteReason = (typeof DELETE_REASONS)[number];

export const HOLD_REASONS = ['litigation', 'investigation', 'regulatory', 'other'] as const;
export const RELEASE_REASONS = ['resolved', 'placed_in_error', 'other'] as const;

export function isOneOf<T extends string>(codes: readonly T[], value: unknown): value is T {
  return (codes as readonly unknown[]).includes(value);
}
