import { z } from 'zod';
import type { ActionVersion, ActivationRecord, KeyValue } from '../../core/types.js';

/**
 * What a controller sends an invoker to run one call: the stored version by where it is stored
 * (immutable, so every server reads the same code), and the caller's view of it (the name it was
 * called by and the parameters merged through its packages), so that no invoker depends on what
 * its own caches say of packages.
 */
export interface InvokeMessage {
  stored: { namespace: string; name: string; version: string; revision: string };
  view: { namespace: string; name: string; parameters: KeyValue[] };
  params: Record<string, unknown>;
  subject: string;
  activationId: string;
  accepted: number;
  annotations: KeyValue[];
  /** False when the controller stores the record itself (it applies a system feed's answer first). */
  storeRecord: boolean;
  clientContext?: string;
}

const KeyValuesSchema = z.array(z.object({ key: z.string(), value: z.unknown() }).transform((kv) => kv as KeyValue));

const InvokeMessageSchema = z.object({
  stored: z.object({ namespace: z.string(), name: z.string(), version: z.string(), revision: z.string() }),
  view: z.object({ namespace: z.string(), name: z.string(), parameters: KeyValuesSchema }),
  params: z.record(z.string(), z.unknown()),
  subject: z.string(),
  activationId: z.string().regex(/^[0-9a-f]{32}$/),
  accepted: z.number(),
  annotations: KeyValuesSchema,
  storeRecord: z.boolean(),
  clientContext: z.string().optional(),
});

/** Reads an invoke message; throws (the bus answers the sender with the error) when it is not one. */
export function decodeInvokeMessage(value: unknown): InvokeMessage {
  const parsed = InvokeMessageSchema.parse(value);
  return {
    ...parsed,
    ...(parsed.clientContext !== undefined ? { clientContext: parsed.clientContext } : {}),
  } as InvokeMessage;
}

/** Where `fn` is stored, and how its caller sees it. */
function versionRef(fn: ActionVersion): Pick<InvokeMessage, 'stored' | 'view'> {
  const stored = fn.origin ?? { namespace: fn.namespace, name: fn.name };
  return {
    stored: { ...stored, version: fn.version, revision: fn.revision },
    view: { namespace: fn.namespace, name: fn.name, parameters: fn.parameters },
  };
}

/** The message for a call of `fn` (as resolved by the controller). */
export function invokeMessageFor(fn: ActionVersion, call: Omit<InvokeMessage, 'stored' | 'view'>): InvokeMessage {
  return { ...versionRef(fn), ...call };
}

/** The version an invoke message names, as the caller saw it; undefined when the stored version is gone. */
export function viewOf(
  stored: ActionVersion | undefined,
  message: Pick<InvokeMessage, 'stored' | 'view'>,
): ActionVersion | undefined {
  if (!stored || stored.revision !== message.stored.revision) return undefined;
  const moved = stored.namespace !== message.view.namespace || stored.name !== message.view.name;
  return {
    ...stored,
    namespace: message.view.namespace,
    name: message.view.name,
    parameters: message.view.parameters,
    ...(moved ? { origin: { namespace: stored.namespace, name: stored.name } } : {}),
  };
}

/** What an invoker answers: the record (stored, unless the message said not to). */
export interface InvokeAnswer {
  record: ActivationRecord;
}

// Built once: a zod schema built per call costs more than the call's NATS round trip.
const InvokeAnswerSchema = z.object({
  record: z
    .object({
      activationId: z.string(),
      namespace: z.string(),
      name: z.string(),
      response: z.object({ status: z.string(), success: z.boolean() }).passthrough(),
    })
    .passthrough(),
});

/** Reads an invoker's answer: the record, checked for the fields the controller uses. */
export function decodeInvokeAnswer(value: unknown): InvokeAnswer {
  return InvokeAnswerSchema.parse(value) as unknown as InvokeAnswer;
}

/**
 * What the work stream carries for an asynchronous activation: its id (its parameters, attempts
 * and state are in the database, where the controller stored them before answering) and the
 * version to run, stored and as the caller saw it.
 */
export interface WorkMessage {
  activationId: string;
  stored: InvokeMessage['stored'];
  view: InvokeMessage['view'];
}

const WorkMessageSchema = z.object({
  activationId: z.string().regex(/^[0-9a-f]{32}$/),
  stored: InvokeMessageSchema.shape.stored,
  view: InvokeMessageSchema.shape.view,
});

export function decodeWorkMessage(value: unknown): WorkMessage {
  return WorkMessageSchema.parse(value) as WorkMessage;
}

/** The work message for a queued activation of `fn`. */
export function workMessageFor(fn: ActionVersion, activationId: string): WorkMessage {
  return { activationId, ...versionRef(fn) };
}
