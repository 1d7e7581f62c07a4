export type { RequestOptions, Response } from './server-process.js';
export { annotation, ServerProcess as TestServer, waitFor } from './server-process.js';
