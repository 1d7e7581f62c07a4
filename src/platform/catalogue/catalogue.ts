import { readFileSync } from 'node:fs';
import type { KeyValue } from '../../core/types.js';

/** The read-only namespace that holds the catalogue, as in OpenWhisk. */
export { SYSTEM_NAMESPACE } from '../../core/names.js';

/**
 * The annotation that marks an action as one of the platform's own feeds; its value names the
 * feed (`alarms`), whose answers `Triggers.applyFeed` applies to the trigger.
 */
export const FEED_ANNOTATION = 'isola-feed';

export interface CatalogueAction {
  name: string;
  kind: 'nodejs:20';
  code: string;
  main: 'main';
  parameters: KeyValue[];
  annotations: KeyValue[];
}

export interface CataloguePackage {
  name: string;
  parameters: KeyValue[];
  annotations: KeyValue[];
  actions: CatalogueAction[];
}

/** An action's source, from actions/ beside this module (the build copies it to dist/). */
function source(path: string): string {
  return readFileSync(new URL(`./actions/${path}`, import.meta.url), 'utf8');
}

/** OpenWhisk's `parameters` annotation: the parameters an action or package documents. */
function documented(...parameters: Array<{ name: string; required: boolean; description?: string }>): KeyValue {
  return { key: 'parameters', value: parameters };
}

function action(
  name: string,
  file: string,
  description: string,
  extra: { parameters?: KeyValue[]; annotations?: KeyValue[] } = {},
): CatalogueAction {
  return {
    name,
    kind: 'nodejs:20',
    code: source(file),
    main: 'main',
    parameters: extra.parameters ?? [],
    annotations: [{ key: 'description', value: description }, ...(extra.annotations ?? [])],
  };
}

// These read __OW_NAMESPACE (and __OW_API_HOST), which only sandboxes with Node.js APIs have.
const WITH_ENVIRONMENT: KeyValue = { key: 'isolation', value: 'process' };

const utils: CataloguePackage = {
  name: 'utils',
  parameters: [],
  annotations: [{ key: 'description', value: 'Building blocks that format and assemble data' }],
  actions: [
    action('echo', 'utils/echo.js', 'Returns the input', {
      annotations: [documented({ name: 'payload', required: false, description: 'Any JSON entity' })],
    }),
    action('cat', 'utils/cat.js', 'Concatenates input into a string', {
      annotations: [documented({ name: 'lines', required: true, description: 'An array of strings or numbers' })],
    }),
    action('sort', 'utils/sort.js', 'Sorts an array', {
      annotations: [documented({ name: 'lines', required: true, description: 'An array of strings' })],
    }),
    action('head', 'utils/head.js', 'Extract prefix of an array', {
      annotations: [
        documented(
          { name: 'lines', required: true, description: 'An array of strings' },
          { name: 'num', required: false, description: 'The length of the prefix' },
        ),
      ],
    }),
    action('split', 'utils/split.js', 'Split a string into an array', {
      annotations: [
        documented(
          { name: 'payload', required: true, description: 'A string' },
          { name: 'separator', required: false, description: 'The string to split at (a newline by default)' },
        ),
      ],
    }),
    action('smash', 'utils/smash.js', 'Nests all properties under given property', {
      annotations: [documented({ name: '$fieldName', required: true, description: 'Name of property to nest object under' })],
    }),
    action('date', 'utils/date.js', 'Current date and time'),
    action('namespace', 'utils/namespace.js', 'Returns namespace for the authorization key used to invoke this action', {
      annotations: [WITH_ENVIRONMENT],
    }),
    action('hosturl', 'utils/hosturl.js', 'Returns the URL to activate an action or trigger', {
      annotations: [
        documented(
          { name: 'web', required: false, description: 'True for web actions' },
          { name: 'ext', required: false, description: 'Extension for web action, one of .html, .http, .json, .svg, .text' },
          { name: 'trigger', required: false, description: 'True to construct path for trigger instead of action.' },
          {
            name: 'path',
            required: false,
            description: 'The action name as just <action name> or <package name>/<action name>.',
          },
        ),
        WITH_ENVIRONMENT,
      ],
    }),
  ],
};

/** OpenWhisk marks feed actions with the annotation `feed: true`; Isola's own mark names the feed. */
const ALARMS_FEED: KeyValue[] = [
  { key: 'feed', value: true },
  { key: FEED_ANNOTATION, value: 'alarms' },
];

const alarms: CataloguePackage = {
  name: 'alarms',
  // As OpenWhisk's: an empty trigger_payload bound on the package (the trigger gets `{}`).
  parameters: [{ key: 'trigger_payload', value: '' }],
  annotations: [
    { key: 'description', value: 'Alarms and periodic utility' },
    documented({ name: 'trigger_payload', required: false }),
  ],
  actions: [
    action('alarm', 'alarms/alarm.js', 'Fire trigger when alarm occurs', {
      annotations: [
        documented(
          { name: 'cron', required: true },
          { name: 'timezone', required: false },
          { name: 'startDate', required: false },
          { name: 'stopDate', required: false },
        ),
        ...ALARMS_FEED,
      ],
    }),
    action('once', 'alarms/alarm.js', 'Fire trigger once when alarm occurs', {
      parameters: [{ key: 'fireOnce', value: true }],
      annotations: [documented({ name: 'date', required: true }, { name: 'deleteAfterFire', required: false }), ...ALARMS_FEED],
    }),
    action('interval', 'alarms/alarm.js', 'Fire trigger at specified interval', {
      parameters: [{ key: 'isInterval', value: true }],
      annotations: [
        documented(
          { name: 'minutes', required: true },
          { name: 'startDate', required: false },
          { name: 'stopDate', required: false },
        ),
        ...ALARMS_FEED,
      ],
    }),
  ],
};

/** The packages of the `whisk.system` namespace: published, read-only, the same on every start. */
export const CATALOGUE: readonly CataloguePackage[] = [utils, alarms];
