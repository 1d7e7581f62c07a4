/** An error whose message is safe to show the caller, with the HTTP status it maps to. */
export class IsolaError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'IsolaError';
  }
}

export const badRequest = (message: string) => new IsolaError(400, message);
export const unauthorized = (message = 'The supplied authentication is invalid.') => new IsolaError(401, message);
export const forbidden = (message = 'The supplied authentication is not authorized to access this resource.') =>
  new IsolaError(403, message);
export const notFound = (message = 'The requested resource does not exist.') => new IsolaError(404, message);
export const conflict = (message: string) => new IsolaError(409, message);
export const payloadTooLarge = (message: string) => new IsolaError(413, message);
export const tooManyRequests = (message: string) => new IsolaError(429, message);
export const unavailable = (message: string) => new IsolaError(503, message);
