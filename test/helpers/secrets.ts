/** Secrets the test processes run with (never real ones). */
export const TEST_HMAC_SECRET = 'test-hmac-secret-0123456789abcdef0123456789';
export const TEST_AUDIT_KEY = 'test-audit-signing-key-0123456789abcdef01';
export const TEST_INTAKE_KEY = 'test-audit-intake-key-0123456789abcdef0123';
