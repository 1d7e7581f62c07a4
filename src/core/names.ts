import { badRequest } from './errors.js';

// OpenWhisk's entity name rule: word characters, then word characters, '@', ' ', '.', '-'; no
// trailing space; at most 256 characters.
const ENTITY_NAME = /^(?:\w|\w[\w@ .-]*[\w@.-])$/;
export const MAX_NAME_LENGTH = 256;

export function isValidEntityName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && ENTITY_NAME.test(name);
}

export function assertEntityName(what: string, name: string): string {
  if (!isValidEntityName(name)) {
    throw badRequest(
      `The ${what} name "${name.slice(0, 80)}" is not valid: use 1 to ${MAX_NAME_LENGTH} letters, digits, ` +
        `underscores, '@', '.', '-' or spaces, starting with a letter, digit or underscore.`,
    );
  }
  return name;
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** The entry point (`exec.main`) must be a plain identifier: it is looked up on the module and in scope. */
export function assertEntryPoint(main: string): string {
  if (!IDENTIFIER.test(main) || main.length > 128) {
    throw badRequest(`exec.main "${main.slice(0, 80)}" is not a valid JavaScript identifier.`);
  }
  return main;
}
