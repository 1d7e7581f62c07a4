import { badRequest } from '../core/errors.js';
import { type Kind, resolveIsolation, resolveKind } from '../core/kinds.js';
import { resolveLimits } from '../core/limits.js';
import { assertActionName, assertEntryPoint } from '../core/names.js';
import { type ActionVersion, type Exec, type KeyValue, SEQUENCE_EXEC } from '../core/types.js';
import { isElfCode, isZipCode } from '../platform/packages/builders.js';
import type { ActionDraft } from '../platform/platform.js';
import type { ActionPut } from './schemas.js';

/**
 * Turns a PUT body into the next version of an action. On update, what the body leaves out is
 * kept from the current version (as `wsk action update` expects); annotations are merged, the
 * new ones winning, and `delAnnotations` removes keys.
 */
export function draftFromPut(namespace: string, name: string, body: ActionPut, current?: ActionVersion): ActionDraft {
  assertActionName(name);
  if (body.name !== undefined && body.name !== name) {
    throw badRequest(`The name in the body ("${body.name.slice(0, 80)}") differs from the name in the path ("${name}").`);
  }
  const sequence = body.exec ? sequenceFrom(body.exec) : current?.sequence;
  const exec = sequence ? SEQUENCE_EXEC : body.exec ? execFrom(body.exec) : current?.exec;
  if (!exec) throw badRequest('exec is required when creating an action: { "kind": "nodejs:20", "code": "..." }.');
  const limits = resolveLimits(body.limits as Partial<ActionVersion['limits']> | undefined, current?.limits);
  const parameters = (body.parameters ?? current?.parameters ?? []).map(stripInit);
  let annotations = current?.annotations ?? [];
  if (body.annotations) {
    const incoming = body.annotations.map(stripInit);
    annotations = [...annotations.filter((a) => !incoming.some((n) => n.key === a.key)), ...incoming];
  }
  if (body.delAnnotations) annotations = annotations.filter((a) => !body.delAnnotations?.includes(a.key));
  const requested = annotations.find((a) => a.key === 'isolation')?.value;
  assertWebAuth(annotations.find((a) => a.key === 'require-whisk-auth')?.value);
  return {
    namespace,
    name,
    exec,
    limits,
    parameters,
    annotations,
    isolation: sequence ? resolveIsolation(exec.kind, undefined, false) : resolveIsolation(exec.kind, requested, exec.binary),
    ...(sequence ? { sequence } : {}),
  };
}

/** A sequence's components as given (checked against the store at deploy), or undefined for code. */
function sequenceFrom(exec: NonNullable<ActionPut['exec']>): string[] | undefined {
  if (exec.kind !== 'sequence') {
    if (exec.components !== undefined) throw badRequest('exec.components is only for exec.kind "sequence".');
    return undefined;
  }
  if (exec.code !== undefined || exec.image !== undefined || exec.main !== undefined || exec.binary === true) {
    throw badRequest('A sequence has no code: send { "kind": "sequence", "components": ["/namespace/action", ...] }.');
  }
  if (!exec.components || exec.components.length === 0) {
    throw badRequest('A sequence needs exec.components: ["/namespace/action", ...], at least one.');
  }
  return exec.components;
}

/** `require-whisk-auth` is true/false or a secret; anything else would leave a web action open by mistake. */
function assertWebAuth(value: unknown): void {
  if (value === undefined || value === null || typeof value === 'boolean') return;
  if (typeof value === 'string' && value.length > 0 && value.length <= 256) return;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return;
  throw badRequest(
    'The annotation require-whisk-auth must be true, false or a secret (a string of 1 to 256 characters, or an integer).',
  );
}

function stripInit(kv: { key: string; value?: unknown }): KeyValue {
  return { key: kv.key, value: kv.value ?? null };
}

/** Kinds that take a zip (base64 in `code`); a jar is a zip. */
const ZIP_KINDS: ReadonlySet<Kind> = new Set(['nodejs:20', 'python:3', 'java:17', 'go:1.19', 'native']);

/**
 * The exec as stored. A zip is recognised by its first bytes whether or not `binary` says so (wsk
 * sends a zip with `binary: true`, some clients without); what is in it is checked at deploy.
 */
function execFrom(exec: NonNullable<ActionPut['exec']>): Exec {
  if (exec.image !== undefined) throw badRequest('Docker image (blackbox) actions are not supported; send code with a kind.');
  const kind = resolveKind(exec.kind);
  const main = exec.main ? { main: entryPointOf(kind, exec.main) } : {};
  // As OpenWhisk, an action with no code can be created; running it fails at initialisation.
  if (exec.code === undefined || exec.code.length === 0) return { kind, code: '', binary: kind === 'wasm', ...main };
  if (kind === 'wasm') {
    if (exec.binary === false) throw badRequest('A wasm action carries its module base64-encoded with exec.binary = true.');
    assertBase64(exec.code);
    return { kind, code: exec.code, binary: true, ...main };
  }
  const zip = isZipCode(exec.code);
  if (zip && !ZIP_KINDS.has(kind))
    throw badRequest(`A ${kind} action is one source file; zips are taken for ${[...ZIP_KINDS].join(', ')}.`);
  const elf = kind === 'native' && isElfCode(exec.code);
  if (zip || elf) {
    assertBase64(exec.code);
    return { kind, code: exec.code, binary: true, ...main };
  }
  if (exec.binary) {
    throw badRequest(
      kind === 'native'
        ? 'A binary native action is a base64 Linux executable (ELF) or a base64 zip with exec at its top.'
        : `Binary code for ${kind} must be a base64 zip${kind === 'java:17' ? ' (a jar)' : ''}; send a source as text with binary false.`,
    );
  }
  return { kind, code: exec.code, binary: false, ...main };
}

function entryPointOf(kind: Kind, main: string): string {
  if (kind === 'java:17') return assertJavaEntryPoint(main);
  if (kind === 'native') return assertNativeEntryPoint(main);
  return assertEntryPoint(main);
}

/**
 * A native action's main is a Lambda custom runtime's handler (its `_HANDLER`, e.g.
 * `function.handler`), whose meaning is the runtime's own; ActionLoop does not use it.
 */
function assertNativeEntryPoint(main: string): string {
  if (!/^[\w][\w.:/-]{0,127}$/.test(main)) {
    throw badRequest(`exec.main "${main.slice(0, 80)}" must be up to 128 letters, digits, '_', '.', '-', '/' or ':'.`);
  }
  return main;
}

/** Java names a class, with its package, and optionally its method: `com.example.Hello#main`. */
function assertJavaEntryPoint(main: string): string {
  if (main.length > 128 || !/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*(#[A-Za-z_$][\w$]*)?$/.test(main)) {
    throw badRequest(`exec.main "${main.slice(0, 80)}" must name a Java class, as Class, com.example.Class or Class#method.`);
  }
  return main;
}

function assertBase64(code: string): void {
  if (!/^[A-Za-z0-9+/\r\n]*={0,2}\s*$/.test(code)) throw badRequest('exec.code is not valid base64.');
}
