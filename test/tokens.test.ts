import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createTokenCodec, MAX_TOKEN_LENGTH, TokenError, type TokenClaims } from '../shared/delivery/tokens.js';

const SECRET = 'current-secret-0123456789abcdef0123456789';
const OLD = 'previous-secret-0123456789abcdef012345678';
const NOW = 1_750_000_000;
const VIDEO = '0b6f1c7e-3a52-4d0e-9f3a-6f1f2c3d4e5f';
const OTHER = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';

const codec = (options: Partial<Parameters<typeof createTokenCodec>[0]> = {}) =>
  createTokenCodec({ secret: SECRET, maxLifetimeSeconds: 300, clockSkewSeconds: 5, ...options });

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TokenError) return err.reason;
    throw err;
  }
  return 'accepted';
}

const uuid = fc.uuid({ version: 4 });
const segment = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,15}$/);
const scope = fc.oneof(
  fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => s.join('/')),
  fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => `${s.join('/')}/`),
);
const claims = fc.record({ videoId: uuid, exp: fc.integer({ min: NOW, max: NOW + 300 }), scope });

describe('media tokens', () => {
  it('round-trips any claims and is URL-safe and small (property)', () => {
    const c = codec();
    fc.assert(
      fc.property(claims, (cl: TokenClaims) => {
        const token = c.sign(cl);
        expect(token).toMatch(/^[A-Za-z0-9._-]+$/);
        expect(token.length).toBeLessThanOrEqual(MAX_TOKEN_LENGTH);
        expect(c.verifyForVideo(token, cl.videoId, NOW)).toEqual(cl);
      }),
    );
  });

  it('refuses every single-character change of a token (property)', () => {
    const c = codec();
    fc.assert(
      fc.property(claims, fc.nat(), fc.constantFrom(...'AZaz09-_.x'), (cl, at, ch) => {
        const token = c.sign(cl);
        const i = at % token.length;
        fc.pre(token[i] !== ch);
        const tampered = token.slice(0, i) + ch + token.slice(i + 1);
        expect(() => c.verifyForVideo(tampered, cl.videoId, NOW)).toThrow(TokenError);
      }),
    );
  });

  it('refuses arbitrary strings without throwing anything but TokenError (property)', () => {
    const c = codec();
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), (s) => {
        expect(() => c.verify(s, VIDEO, 'hls/a.m4s', NOW)).toThrow(TokenError);
      }),
    );
  });

  it('binds the token to its video and its exact scope', () => {
    const c = codec();
    const hls = c.sign({ videoId: VIDEO, exp: NOW + 60, scope: 'hls/' });
    const original = c.sign({ videoId: VIDEO, exp: NOW + 60, scope: 'original.mp4' });
    expect(reason(() => c.verify(hls, VIDEO, 'hls/240p/seg_001.m4s', NOW))).toBe('accepted');
    expect(reason(() => c.verify(hls, OTHER, 'hls/master.m3u8', NOW))).toBe('wrong_video');
    expect(reason(() => c.verify(hls, VIDEO, 'dash/manifest.mpd', NOW))).toBe('out_of_scope');
    expect(reason(() => c.verify(hls, VIDEO, 'hlsx/master.m3u8', NOW))).toBe('out_of_scope');
    expect(reason(() => c.verify(hls, VIDEO, 'original.mp4', NOW))).toBe('out_of_scope');
    expect(reason(() => c.verify(original, VIDEO, 'original.mp4', NOW))).toBe('accepted');
    expect(reason(() => c.verify(original, VIDEO, 'hls/master.m3u8', NOW))).toBe('out_of_scope');
    expect(reason(() => c.verify(original, VIDEO, 'original.mp4.m3u8', NOW))).toBe('out_of_scope');
  });

  it('expires after exp plus the clock skew, and refuses lifetimes beyond the maximum', () => {
    const c = codec();
    const token = c.sign({ videoId: VIDEO, exp: NOW, scope: 'a.mp4' });
    expect(reason(() => c.verify(token, VIDEO, 'a.mp4', NOW + 5))).toBe('accepted');
    expect(reason(() => c.verify(token, VIDEO, 'a.mp4', NOW + 6))).toBe('token_expired');
    const long = c.sign({ videoId: VIDEO, exp: NOW + 3600, scope: 'a.mp4' });
    expect(reason(() => c.verify(long, VIDEO, 'a.mp4', NOW))).toBe('token_lifetime');
  });

  it('keeps tokens of the previous secret valid after rotation, refuses unknown kids', () => {
    const before = codec({ secret: OLD });
    const after = codec({ secret: SECRET, previousSecret: OLD });
    const afterNext = codec({ secret: 'next-secret-0123456789abcdef0123456789ab', previousSecret: SECRET });
    const old = before.sign({ videoId: VIDEO, exp: NOW + 60, scope: 'hls/' });
    expect(before.kid).not.toBe(after.kid);
    expect(reason(() => after.verify(old, VIDEO, 'hls/a.m4s', NOW))).toBe('accepted');
    expect(reason(() => after.verify(old, VIDEO, 'hls/a.m4s', NOW + 66))).toBe('token_expired');
    expect(reason(() => afterNext.verify(old, VIDEO, 'hls/a.m4s', NOW))).toBe('unknown_kid');
    // A forged token under a known kid but made with another secret fails the MAC.
    const forged = codec({ secret: 'attacker-secret-0123456789abcdef01234567' }).sign({ videoId: VIDEO, exp: NOW + 60, scope: 'hls/' });
    const underKnownKid = forged.replace(/^v1\.[^.]+\./, `v1.${after.kid}.`);
    expect(reason(() => after.verify(underKnownKid, VIDEO, 'hls/a.m4s', NOW))).toBe('bad_signature');
  });

  it('names the reason for empty, truncated, oversize and malformed tokens', () => {
    const c = codec();
    const token = c.sign({ videoId: VIDEO, exp: NOW + 60, scope: 'hls/' });
    expect(reason(() => c.verify('', VIDEO, 'hls/a.m4s', NOW))).toBe('token_missing');
    expect(reason(() => c.verify(null, VIDEO, 'hls/a.m4s', NOW))).toBe('token_missing');
    expect(reason(() => c.verify(token.slice(0, -1), VIDEO, 'hls/a.m4s', NOW))).toBe('token_malformed');
    expect(reason(() => c.verify(token.slice(0, token.lastIndexOf('.')), VIDEO, 'hls/a.m4s', NOW))).toBe('token_malformed');
    expect(reason(() => c.verify(token + 'A'.repeat(MAX_TOKEN_LENGTH), VIDEO, 'hls/a.m4s', NOW))).toBe('token_oversize');
    expect(reason(() => c.verify(token.replace(/^v1/, 'v2'), VIDEO, 'hls/a.m4s', NOW))).toBe('token_malformed');
    expect(reason(() => c.verify(`${token}.extra`, VIDEO, 'hls/a.m4s', NOW))).toBe('token_malformed');
  });

  it('refuses to sign what it could not verify', () => {
    const c = codec();
    expect(() => c.sign({ videoId: 'not-a-uuid', exp: NOW, scope: 'a.mp4' })).toThrow(TypeError);
    expect(() => c.sign({ videoId: VIDEO, exp: NOW, scope: '../a.mp4' })).toThrow(TypeError);
    expect(() => c.sign({ videoId: VIDEO, exp: 1.5, scope: 'a.mp4' })).toThrow(TypeError);
  });
});
