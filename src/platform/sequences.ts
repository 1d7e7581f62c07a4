import { badRequest, IsolaError } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import { parseReference, qualifiedName, viewedName } from '../core/names.js';
import type { ActionVersion, ActivationRecord, ActivationResponse, KeyValue } from '../core/types.js';
import type { FunctionRef } from './invoke.js';

/** OpenWhisk's limit on the actions one sequence runs, nested sequences flattened. */
export const MAX_SEQUENCE_ACTIONS = 50;

/**
 * A component as the sequence's namespace names it: `name`, `package/name`, `/ns/package/name`;
 * another namespace's action only through a shared package (see `viewedName`).
 */
export function componentRef(reference: string, namespace: string): FunctionRef {
  return { namespace, name: viewedName(parseReference(reference, namespace, 'sequence component'), namespace) };
}

const qualified = (ref: FunctionRef) => qualifiedName(ref.namespace, ref.name);

/**
 * Checks a sequence before it is stored and returns its components fully qualified: each exists
 * in the sequence's namespace, none leads back to the sequence itself (directly or through other
 * sequences), and the actions it runs, nested sequences flattened, are at most 50.
 */
export async function checkSequence(
  self: FunctionRef,
  components: readonly string[],
  resolve: (ref: FunctionRef) => Promise<ActionVersion | undefined>,
): Promise<string[]> {
  if (components.length === 0) throw badRequest('A sequence needs at least one component.');
  // In a sequence's body, a component that may not be used is a bad request, not a refused call.
  const refs = components.map((component) => {
    try {
      return componentRef(component, self.namespace);
    } catch (error) {
      throw error instanceof IsolaError ? badRequest(error.message) : error;
    }
  });
  let actions = 0;
  const walk = async (level: readonly FunctionRef[]): Promise<void> => {
    for (const ref of level) {
      if (ref.namespace === self.namespace && ref.name === self.name) {
        throw badRequest(`The sequence ${qualified(self)} may not include itself, directly or through another sequence.`);
      }
      const fn = await resolve(ref);
      if (!fn) throw badRequest(`The sequence component ${qualified(ref)} does not exist.`);
      if (fn.sequence) await walk(fn.sequence.map((c) => componentRef(c, fn.namespace)));
      else if (++actions > MAX_SEQUENCE_ACTIONS) {
        throw badRequest(`A sequence may run at most ${MAX_SEQUENCE_ACTIONS} actions, nested sequences included.`);
      }
    }
  };
  await walk(refs);
  return refs.map(qualified);
}

export interface SequenceHost {
  resolve: (ref: FunctionRef) => Promise<ActionVersion | undefined>;
  /** Runs one action of the sequence and stores its record; a string says why it was refused. */
  runAction: (
    fn: ActionVersion,
    params: Record<string, unknown>,
    subject: string,
    annotations: KeyValue[],
  ) => Promise<ActivationRecord | string>;
  store: (record: ActivationRecord, accepted: number) => Promise<void>;
}

export interface SequenceRun {
  params: Record<string, unknown>;
  subject: string;
  activationId: string;
  accepted: number;
  /** The door's annotations, for the outermost sequence; a nested one's cause. */
  annotations: KeyValue[];
  /** The door's rule for the sequence's final result (a web action's HTTP shape, say). */
  checkResult?: (result: unknown) => string | undefined;
}

/**
 * Runs a sequence as OpenWhisk does: each component's result is the next one's parameters, the
 * first failure ends the chain and is the sequence's result, and the sequence's activation lists
 * its components' activation ids in `logs`. A nested sequence runs as a component with its own
 * activation; the actions run in all are bounded as at create, in case stored sequences changed.
 */
export class Sequences {
  constructor(private readonly host: SequenceHost) {}

  run(sequence: ActionVersion, run: SequenceRun): Promise<ActivationRecord> {
    return this.runNested(sequence, run, true, { actions: 0, nested: 0 });
  }

  private async runNested(
    sequence: ActionVersion,
    run: SequenceRun,
    topmost: boolean,
    budget: { actions: number; nested: number },
  ): Promise<ActivationRecord> {
    const start = Date.now();
    const logs: string[] = [];
    let params: Record<string, unknown> = {
      ...Object.fromEntries(sequence.parameters.map((p) => [p.key, p.value])),
      ...run.params,
    };
    let response: ActivationResponse = { status: 'success', success: true, result: params };
    const caused: KeyValue[] = [
      { key: 'causedBy', value: 'sequence' },
      { key: 'cause', value: run.activationId },
    ];
    for (const component of sequence.sequence ?? []) {
      let ref: FunctionRef;
      try {
        ref = componentRef(component, sequence.namespace);
      } catch (error) {
        response = applicationError(`Sequence component ${component} cannot be used here: ${(error as Error).message}`);
        break;
      }
      const fn = await this.host.resolve(ref);
      if (!fn) {
        response = applicationError(`Sequence component does not exist: ${qualified(ref)}.`);
        break;
      }
      let record: ActivationRecord | string;
      if (fn.sequence && ++budget.nested > MAX_SEQUENCE_ACTIONS) {
        // Only two updates racing each other can have made a cycle; it ends here, not in a stack overflow.
        record = `The sequence nests more than ${MAX_SEQUENCE_ACTIONS} sequences.`;
      } else if (fn.sequence) {
        record = await this.runNested(
          fn,
          { params, subject: run.subject, activationId: newActivationId(), accepted: Date.now(), annotations: caused },
          false,
          budget,
        );
      } else if (++budget.actions > MAX_SEQUENCE_ACTIONS) {
        record = `The sequence ran more than ${MAX_SEQUENCE_ACTIONS} actions.`;
      } else {
        record = await this.host.runAction(fn, params, run.subject, caused);
      }
      if (typeof record === 'string') {
        response = applicationError(`Sequence component ${qualified(ref)} could not run: ${record}`);
        break;
      }
      logs.push(record.activationId);
      response = record.response;
      if (!response.success) break;
      const result = response.result;
      if (typeof result !== 'object' || result === null || Array.isArray(result)) {
        response = {
          status: 'action developer error',
          success: false,
          result: { error: `Sequence component ${qualified(ref)} did not return a dictionary.` },
        };
        break;
      }
      params = result as Record<string, unknown>;
    }
    const broken = response.success ? run.checkResult?.(response.result) : undefined;
    if (broken !== undefined) response = { status: 'action developer error', success: false, result: { error: broken } };
    const end = Date.now();
    const record: ActivationRecord = {
      activationId: run.activationId,
      namespace: sequence.namespace,
      name: sequence.name,
      version: sequence.version,
      subject: run.subject,
      start,
      end,
      duration: end - start,
      response,
      logs,
      annotations: [
        ...(topmost ? [{ key: 'topmost', value: true }] : []),
        { key: 'path', value: qualifiedName(sequence.namespace, sequence.name).slice(1) },
        { key: 'kind', value: 'sequence' },
        { key: 'limits', value: sequence.limits },
        ...run.annotations,
      ],
      publish: false,
    };
    await this.host.store(record, run.accepted);
    return record;
  }
}

function applicationError(message: string): ActivationResponse {
  return { status: 'application error', success: false, result: { error: message } };
}
