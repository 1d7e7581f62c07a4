import { pathAndName, qualifiedName } from '../core/names.js';
import type { ActionVersion, ActivationRecord, KeyValue } from '../core/types.js';

/** The action as OpenWhisk shows it; the resolved isolation appears as an annotation. */
export function actionView(action: ActionVersion, options: { code?: boolean } = {}) {
  const withCode = options.code ?? true;
  if (action.sequence) return sequenceView(action, action.sequence);
  return {
    ...entityPath(action),
    version: action.version,
    publish: false,
    exec: {
      kind: action.exec.kind,
      ...(withCode ? { code: action.exec.code } : {}),
      binary: action.exec.binary,
      ...(action.exec.main ? { main: action.exec.main } : {}),
    },
    annotations: annotationsView(action),
    parameters: action.parameters,
    limits: action.limits,
    updated: action.updated,
  };
}

/** A sequence as OpenWhisk shows it: its components in `exec`, and `exec: sequence` among the annotations. */
function sequenceView(action: ActionVersion, components: readonly string[]) {
  const shown = action.annotations.filter((a) => a.key !== 'exec' && a.key !== 'isolation');
  return {
    ...entityPath(action),
    version: action.version,
    publish: false,
    exec: { kind: 'sequence', components },
    annotations: [...shown, { key: 'exec', value: 'sequence' }],
    parameters: action.parameters,
    limits: action.limits,
    updated: action.updated,
  };
}

/** OpenWhisk's `namespace` and `name` of an action: the package is part of the namespace (`guest/pkg`). */
function entityPath(action: ActionVersion): { namespace: string; name: string } {
  const { path, name } = pathAndName(qualifiedName(action.namespace, action.name));
  return { namespace: path, name };
}

function annotationsView(action: ActionVersion): KeyValue[] {
  const shown = action.annotations.filter((a) => a.key !== 'exec' && a.key !== 'isolation');
  return [...shown, { key: 'exec', value: action.exec.kind }, { key: 'isolation', value: action.isolation }];
}

/** OpenWhisk's numeric status in activation lists. */
const STATUS_CODES: Record<ActivationRecord['response']['status'], number> = {
  success: 0,
  'application error': 1,
  'action developer error': 2,
  'whisk internal error': 3,
};

/** An activation in a list without `docs=true`: no logs, no result. */
export function activationSummary(record: ActivationRecord) {
  const { logs: _logs, response, ...rest } = record;
  return { ...rest, statusCode: STATUS_CODES[response.status] };
}

export function resultView(record: ActivationRecord) {
  return {
    ...record.response,
    size: Buffer.byteLength(JSON.stringify(record.response.result ?? null)),
  };
}

/** HTTP status for a blocking invoke, as OpenWhisk answers it. */
export function invokeStatus(record: ActivationRecord): number {
  switch (record.response.status) {
    case 'success':
      return 200;
    case 'application error':
    case 'action developer error':
      return 502;
    default:
      return 500;
  }
}
