import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError } from '../../core/errors.js';

/** An error with the exception name Lambda gives it, so that AWS SDKs raise it by that name. */
export class LambdaError extends IsolaError {
  constructor(
    status: number,
    readonly type: string,
    message: string,
  ) {
    super(status, message);
    this.name = 'LambdaError';
  }
}

export const invalidParameter = (message: string) => new LambdaError(400, 'InvalidParameterValueException', message);
export const invalidRequestContent = (message: string) => new LambdaError(400, 'InvalidRequestContentException', message);
export const resourceNotFound = (message: string) => new LambdaError(404, 'ResourceNotFoundException', message);
export const resourceConflict = (message: string) => new LambdaError(409, 'ResourceConflictException', message);

/** The exception Lambda names for each status an Isola error carries. */
const TYPE_OF_STATUS: Record<number, string> = {
  400: 'InvalidParameterValueException',
  401: 'UnrecognizedClientException',
  403: 'AccessDeniedException',
  404: 'ResourceNotFoundException',
  409: 'ResourceConflictException',
  412: 'PreconditionFailedException',
  413: 'RequestTooLargeException',
  415: 'UnsupportedMediaTypeException',
  429: 'TooManyRequestsException',
};

/** The exception name for an error: its own, else by its status; 5xx are the service's failure. */
export function lambdaErrorType(status: number, error?: unknown): string {
  if (error instanceof LambdaError) return error.type;
  if (status >= 500) return 'ServiceException';
  return TYPE_OF_STATUS[status] ?? 'InvalidRequestContentException';
}

/**
 * Sends an error as Lambda does: `X-Amzn-ErrorType` and a JSON body with `__type`, `message`
 * and `Message` (the SDKs read either), plus Isola's own `error` and `code` (the request id).
 */
export function sendLambdaError(reply: FastifyReply, status: number, type: string, message: string) {
  const requestId = String(reply.request.id);
  return reply
    .code(status)
    .header('x-amzn-errortype', type)
    .header('x-amzn-requestid', requestId)
    .header('content-type', 'application/json')
    .send(
      JSON.stringify({
        __type: type,
        Type: status >= 500 ? 'Service' : 'User',
        message,
        Message: message,
        error: message,
        code: requestId,
      }),
    );
}

/** The Lambda routes' error handler: every error in Lambda's shape. */
export function lambdaErrorHandler(error: FastifyError | IsolaError, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof IsolaError)
    return sendLambdaError(reply, error.status, lambdaErrorType(error.status, error), error.message);
  const status = error.statusCode ?? 500;
  if (status === 413) {
    const limit = request.routeOptions.bodyLimit;
    return sendLambdaError(
      reply,
      413,
      'RequestTooLargeException',
      `The request content is larger than the ${limit ?? 'allowed'} bytes allowed.`,
    );
  }
  if (status < 500) return sendLambdaError(reply, status, lambdaErrorType(status), error.message);
  request.log.error({ err: error, requestId: String(request.id) }, 'request failed');
  return sendLambdaError(reply, 500, 'ServiceException', 'The server encountered an internal error.');
}
