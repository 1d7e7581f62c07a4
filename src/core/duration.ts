/** A duration written in a form parseDuration does not read. */
export class DurationSyntaxError extends Error {
  constructor(readonly text: string) {
    super(`"${text}" is not a duration: use e.g. 500ms, 30s, 10m, 4h or 7d.`);
    this.name = 'DurationSyntaxError';
  }
}

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Durations as `500ms`, `30s`, `10m`, `4h`, `7d` or a bare number of ms. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) throw new DurationSyntaxError(text);
  const unit = UNIT_MS[(match[2] ?? 'ms') as keyof typeof UNIT_MS];
  return Math.round(Number(match[1]) * unit);
}
