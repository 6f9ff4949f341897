import { NotImplementedError } from '../../shared/errors.js';
import { defineFunction } from '../../shared/function.js';

export default defineFunction(() => async () => {
  throw new NotImplementedError('stream is not implemented yet');
});
