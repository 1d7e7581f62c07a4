export type { RequestOptions, Response } from '../../src/bench/server-process.js';
export { annotation, ServerProcess as TestServer, waitFor } from '../../src/bench/server-process.js';
