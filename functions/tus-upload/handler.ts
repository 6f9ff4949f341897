/**
 * tus-upload: resumable uploads (tus 1.0.0) into UPLOAD_DIR, safe with several
 * replicas (Redis upload locks), plus the periodic expiry sweep.
 */
import { createAuthenticator } from '../../shared/auth/jwt.js';
import { defineFunction } from '../../shared/platform/handler-contract.js';
import { createRedis } from '../../shared/platform/redis.js';
import { startExpirySweep } from '../../shared/uploads/expiry-sweep.js';
import { RedisLocker } from '../../shared/uploads/locker.js';
import { openUploadStore } from '../../shared/uploads/store.js';
import { createTusHandler } from '../../shared/uploads/tus-server.js';

export default defineFunction(async ({ config, log, onShutdown }) => {
  const auth = createAuthenticator(config, log);
  const redis = createRedis(config, { name: 'tus-upload', log });
  const locker = new RedisLocker(redis);
  const store = await openUploadStore(config);
  const stopSweep = startExpirySweep({ store, locker, redis, intervalMs: config.uploadSweepIntervalMs, log });
  onShutdown(async () => {
    stopSweep();
    await locker.close();
    redis.disconnect();
  });
  return createTusHandler({ config, auth, store, locker, log });
});
