import { badRequest, IsolaError } from '../core/errors.js';

/** Parses a JSON body; malformed JSON and `__proto__` keys are the caller's mistake (400). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text, (key, value: unknown) => {
      // Merged into other objects, a `__proto__` key could replace a prototype.
      if (key === '__proto__') throw badRequest('The key "__proto__" is not allowed in JSON bodies.');
      return value;
    });
  } catch (error) {
    if (error instanceof IsolaError) throw error;
    throw badRequest(`The request content was malformed: ${(error as Error).message}`);
  }
}
