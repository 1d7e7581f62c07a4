import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';

const require = createRequire(import.meta.url);

/** The files the dashboard's pages load: the UI's own, and htmx and uPlot from their packages (no CDN). */
const SOURCES: Record<string, () => string> = {
  'ui.js': () => new URL('./static/ui.js', import.meta.url).pathname,
  'ui.css': () => new URL('./static/ui.css', import.meta.url).pathname,
  'htmx.min.js': () => require.resolve('htmx.org/dist/htmx.min.js'),
  'uPlot.iife.min.js': () => require.resolve('uplot/dist/uPlot.iife.min.js'),
  'uPlot.min.css': () => require.resolve('uplot/dist/uPlot.min.css'),
};

export interface Asset {
  name: string;
  body: Buffer;
  gzipped: Buffer;
  type: string;
  /** Of the content: in the URL, so that a page always loads the files it was made with. */
  version: string;
}

let loaded: Map<string, Asset> | undefined;

/** Every asset, read and compressed once. */
export function assets(): ReadonlyMap<string, Asset> {
  if (!loaded) {
    loaded = new Map();
    for (const [name, path] of Object.entries(SOURCES)) {
      const body = readFileSync(path());
      loaded.set(name, {
        name,
        body,
        gzipped: gzipSync(body, { level: 9 }),
        type: name.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8',
        version: createHash('sha256').update(body).digest('hex').slice(0, 12),
      });
    }
  }
  return loaded;
}

export function assetUrl(name: string): string {
  const asset = assets().get(name);
  if (!asset) throw new Error(`no dashboard asset named ${name}`);
  return `/ui/assets/${name}?v=${asset.version}`;
}
