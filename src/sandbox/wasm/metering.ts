import wabtInit from 'wabt';
import { REFUEL_IMPORT } from './binary.js';

/**
 * Fuel metering: a copy of a module that counts what it executes and asks the host, every
 * REFUEL_UNITS, whether its time is up, so that a short module can run on the server's thread
 * within a wall-clock budget without a watchdog thread (Node.js's `vm` timeout starts one for
 * every call, which costs more than the hop to a worker that the fast path saves).
 *
 * The module is rewritten through WABT's text form, with names so that the new import shifts no
 * index. A charge is inserted at the entry of every function and at the start of every straight
 * stretch of code that control can enter other than from the instruction before it (a loop's
 * head, an arm of an if, the code after a block): the stretch's number of instructions. Calls
 * that may reach the host cost more, and the bulk memory and table instructions are charged by
 * their length before they run. When the fuel goes below zero the module calls the host's
 * `isola.refuel`, which gives it more or, past the budget, -1: then it traps, with `unreachable`,
 * which no handler in the module can catch.
 */

/**
 * Fuel between two looks at the clock. A unit is about one wasm instruction, 0.07-0.13 ns of
 * optimised code here (the example modules), so the clock is read about every 0.1 ms; code that
 * is slow per instruction (cache misses on every load) reads it less often.
 */
export const REFUEL_UNITS = 1_000_000;
/** What a call that may reach the host (an import, or an indirect call) costs: a host function takes about a microsecond. */
const HOST_CALL_COST = 5_000;
/** Bulk instructions cost one unit per 2^BULK_SHIFT bytes or table entries. */
const BULK_SHIFT = 4;
/** Modules larger than this are not rewritten (their text would be large; they are rarely short). */
export const METER_MAX_BYTES = 1 << 20;

const FEATURES = {
  mutable_globals: true,
  sat_float_to_int: true,
  sign_extension: true,
  simd: true,
  multi_value: true,
  bulk_memory: true,
  reference_types: true,
  tail_call: true,
  exceptions: true,
  extended_const: true,
  relaxed_simd: true,
};

/** Instructions that wait or whose cost the charges here do not bound: such a module is not metered. */
const UNBOUNDED = /\b(memory\.atomic\.wait|i32\.atomic\.wait|i64\.atomic\.wait|atomic\.wait32|atomic\.wait64)\b/;
const BULK = /^(memory\.copy|memory\.fill|memory\.init|table\.copy|table\.fill|table\.init|table\.grow)\b/;
const OPENERS = /^(block|loop|if|try|try_table)\b/;

type Wabt = Awaited<ReturnType<typeof wabtInit>>;
let wabt: Promise<Wabt> | undefined;

/** Strips the text's comments, which may hold parentheses. */
function code(line: string): string {
  return line.replace(/\(;.*?;\)/g, '').replace(/;;.*$/, '');
}

function depthChange(text: string): number {
  let change = 0;
  for (const c of text) {
    if (c === '(') change++;
    else if (c === ')') change--;
  }
  return change;
}

const charge = (cost: string[]) => [
  'global.get $__isola_meter_fuel',
  ...cost,
  'i32.sub',
  'global.set $__isola_meter_fuel',
  'global.get $__isola_meter_fuel',
  'i32.const 0',
  'i32.lt_s',
  'if',
  'call $__isola_meter_refuel',
  'global.set $__isola_meter_fuel',
  'global.get $__isola_meter_fuel',
  'i32.const 0',
  'i32.lt_s',
  'if',
  'unreachable',
  'end',
  'end',
];

/**
 * The metered module's bytes, or undefined when this module cannot be metered (too large, a
 * feature the rewrite does not cover, a clash of names): such a module never runs on the
 * server's thread. Its instances need REFUEL_IMPORT.
 */
export async function meterModule(bytes: Uint8Array): Promise<Uint8Array | undefined> {
  if (bytes.length > METER_MAX_BYTES) return undefined;
  wabt ??= wabtInit();
  const tools = await wabt;
  let text: string;
  try {
    // An ArrayBuffer of exactly the module: given a view, WABT reads its whole underlying buffer
    // (a pooled Buffer's other bytes too).
    const parsed = tools.readWasm(new Uint8Array(bytes), { readDebugNames: false, check: true, ...FEATURES });
    try {
      parsed.generateNames();
      parsed.applyNames();
      text = parsed.toText({ foldExprs: false, inlineExport: false });
    } finally {
      parsed.destroy();
    }
  } catch {
    return undefined;
  }
  const rewritten = rewrite(text);
  if (rewritten === undefined) return undefined;
  try {
    const module = tools.parseWat('metered.wat', rewritten, FEATURES);
    try {
      module.validate();
      return module.toBinary({}).buffer;
    } finally {
      module.destroy();
    }
  } catch {
    return undefined;
  }
}

/** The text with the charges inserted, or undefined when it holds what cannot be metered. */
export function rewrite(text: string): string | undefined {
  if (UNBOUNDED.test(text) || text.includes('__isola_meter_')) return undefined;
  if (/^\s*\((memory|table)\b.*\bi64\b/m.test(text)) return undefined;
  const lines = text.split('\n');
  if (lines[0] !== '(module') return undefined;
  const imported = new Set<string>();
  for (const line of lines) {
    const match = /^ {2}\(import "[^"]*" "[^"]*" \(func (\$\S+)/.exec(line);
    if (match) imported.add(match[1] as string);
  }
  const out: string[] = [];
  let i = 0;
  let importAdded = false;
  while (i < lines.length) {
    const line = lines[i] as string;
    if (!importAdded && /^ {2}\((func|table|memory|global|tag)\b/.test(line)) {
      // Imports come before every definition; the new one is named, so no index moves.
      out.push(`  (import "${REFUEL_IMPORT.module}" "${REFUEL_IMPORT.name}" (func $__isola_meter_refuel (result i32)))`);
      importAdded = true;
    }
    if (!line.startsWith('  (func ')) {
      out.push(line);
      i++;
      continue;
    }
    const closed = functionEnd(lines, i);
    if (closed === undefined) return undefined;
    // The last function's last line also closes the module: that parenthesis goes back after it.
    const own = lines.slice(i, closed.end + 1);
    const last = own.at(-1) as string;
    const beyond = ')'.repeat(closed.beyond);
    if (!last.endsWith(beyond)) return undefined;
    own[own.length - 1] = last.slice(0, last.length - closed.beyond);
    const body = meterFunction(own, imported);
    if (body === undefined) return undefined;
    body[body.length - 1] += beyond;
    out.push(...body);
    i = closed.end + 1;
  }
  if (!importAdded) return undefined;
  // The module's closing parenthesis ends the last line that is not blank.
  let last = out.length - 1;
  while (last >= 0 && (out[last] as string).trim() === '') last--;
  const closing = out[last] as string;
  if (!closing.endsWith(')')) return undefined;
  out[last] = closing.slice(0, -1);
  out.push(`  (global $__isola_meter_fuel (mut i32) (i32.const ${REFUEL_UNITS})))`);
  return out.join('\n');
}

/** The line that closes the function opened at `start`, and how many parentheses it closes beyond it. */
function functionEnd(lines: readonly string[], start: number): { end: number; beyond: number } | undefined {
  let depth = 0;
  for (let i = start; i < lines.length; i++) {
    depth += depthChange(code(lines[i] as string));
    if (depth <= 0) return { end: i, beyond: -depth };
  }
  return undefined;
}

interface Counter {
  /** Where its charge goes in the output. */
  at: number;
  cost: number;
}

/** After these, control may arrive from elsewhere (a loop's head, a branch's target, an arm): a new charge. */
const SEGMENT_START = /^(loop|if|else|end|catch|catch_all|delegate|try|try_table)\b/;

/**
 * Inserts a charge at the entry and at the start of every straight stretch that control can
 * enter other than from the instruction before it (after a loop's head, an if, an else, a block's
 * end, a handler). Each charge is the stretch's length; a branch out of its middle leaves the rest
 * charged but not run, an overcharge bounded by the stretch.
 */
function meterFunction(lines: readonly string[], imported: ReadonlySet<string>): string[] | undefined {
  const out: string[] = [];
  // The header and its locals, as they are; a function with no body closes on one of them.
  let i = 1;
  out.push(lines[0] as string);
  for (; i < lines.length && (lines[i] as string).trimStart().startsWith('(local '); i++) out.push(lines[i] as string);
  let closesHere = depthChange(out.map(code).join('\n')) === 0;
  if (closesHere) out[out.length - 1] = (out.at(-1) as string).slice(0, -1);
  out.push('    (local $__isola_meter_n i32)');
  let current: Counter = { at: out.length, cost: 1 };
  out.push('');
  const counters = [current];
  let depth = 0;
  for (; i < lines.length; i++) {
    let line = lines[i] as string;
    const last = i === lines.length - 1;
    if (last) {
      if (!line.endsWith(')')) return undefined;
      line = line.slice(0, -1);
      closesHere = true;
    }
    const instruction = code(line).trim();
    if (instruction === '') {
      out.push(line);
      continue;
    }
    current.cost++;
    const call = /^(call|return_call) (\$\S+)/.exec(instruction);
    if (call && imported.has(call[2] as string)) current.cost += HOST_CALL_COST;
    if (/^(call_indirect|return_call_indirect|call_ref|return_call_ref)\b/.test(instruction)) current.cost += HOST_CALL_COST;
    if (BULK.test(instruction)) {
      // The length is on top of the stack: charge it before the instruction runs.
      out.push(
        '    local.tee $__isola_meter_n',
        ...indent(charge(['local.get $__isola_meter_n', `i32.const ${BULK_SHIFT}`, 'i32.shr_u'])),
      );
    }
    out.push(line);
    if (OPENERS.test(instruction)) depth++;
    else if (/^(end|delegate)\b/.test(instruction) && --depth < 0) return undefined;
    if (SEGMENT_START.test(instruction) && !last) {
      current = { at: out.length, cost: 0 };
      counters.push(current);
      out.push('');
    }
  }
  if (depth !== 0) return undefined;
  for (const counter of counters)
    if (counter.cost > 0) out[counter.at] = indent(charge([`i32.const ${counter.cost}`])).join('\n');
  if (closesHere) out[out.length - 1] = `${out.at(-1) as string})`;
  return out;
}

const indent = (lines: string[]) => lines.map((l) => `    ${l}`);
