// One transcode job (argv[2], JSON) run by the compiled transcoder, killed as `kill -9` would at the
// chunk commit step named by CHUNK_CRASH_AT (CHUNK_COMMIT_STEPS, shared/transcode/fanout.ts).
import { createAuditLog } from '../../dist/shared/audit/client.js';
import { openVideoKeys } from '../../dist/shared/keys/video-keys.js';
import { loadConfig } from '../../dist/shared/platform/config.js';
import { createLogger } from '../../dist/shared/platform/log.js';
import { createRedis } from '../../dist/shared/platform/redis.js';
import { checkEncoders, transcodeVideo } from '../../dist/shared/transcode/transcoder.js';
import { MediaStore } from '../../dist/shared/video/store.js';

const config = loadConfig(process.env);
const log = createLogger('crashing-chunk', 'error');
const redis = createRedis(config, { name: 'crashing-chunk', log });
const store = new MediaStore(config.videoDir, redis, await openVideoKeys(config));
const audit = createAuditLog(config, redis, log);
const onStep = (step) => {
  if (step === process.env.CHUNK_CRASH_AT) process.kill(process.pid, 'SIGKILL');
};
await transcodeVideo({ config, redis, store, audit, log, onStep }, await checkEncoders(config), JSON.parse(process.argv[2]));
process.exit(0);
