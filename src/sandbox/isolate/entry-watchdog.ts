import ivm from 'isolated-vm';

/**
 * One watchdog for the fast path's entries into isolates, in place of isolated-vm's timeout on
 * each. isolated-vm gives every call with a timeout a timer of its own, and its timer thread wakes
 * up for each of them: under load, about 2 us of the server's thread and a thread wake-up a call.
 * The watchdog is a small isolate that loops on one of isolated-vm's threads and is told of each
 * entry through shared memory: it sleeps until the entry's budget ends and, if the same entry is
 * still running then, disposes the isolate it runs in, which ends the entry. Under load it wakes
 * about once a budget instead of once a call.
 *
 * An isolate is handed to the watchdog at its third entry (between the watchdog's loops) and
 * covered from then on; until then, and whenever the loop is not running, an entry takes
 * isolated-vm's timeout as before. The loop ends after a second without entries, so that an idle process can exit.
 */

// Int32 slots of the shared state.
/** The entry being watched: its number (> 0), 0 for none, or minus its number once the watchdog claimed it. */
const ENTERED = 0;
/** The watched entry's isolate: its index in the watchdog's list. */
const SLOT = 1;
/** 1 while the loop runs (it covers entries). */
const ALIVE = 2;
/** 1 while the loop waits for an entry: the next entry wakes it. */
const IDLE = 3;
/** 1 when the host wants the loop to end (to hand it isolates, or to close). */
const REQUEST = 4;
/** Always 0: what the loop sleeps on until a deadline (only the host's requests wake it there). */
const SLEEP = 5;
const INT32_SLOTS = 8;
/** The watched entry's deadline (Date.now() ms), a Float64 after the Int32 slots. */
const DEADLINE_BYTE = INT32_SLOTS * 4;

const IDLE_LOOP_END_MS = 1000;
/** Entries of an isolate before the watchdog is handed it. */
const HAND_OVER_AFTER = 3;

// Runs in the watchdog's isolate, which shares only the state buffer and the isolates it was handed.
const WATCHDOG_SOURCE = `
const isolates = [];
function register(slot, isolate) { isolates[slot] = isolate; }
function forget(slot) { isolates[slot] = undefined; }
function watch(buffer) {
  const state = new Int32Array(buffer);
  const deadline = new Float64Array(buffer, ${DEADLINE_BYTE}, 1);
  Atomics.store(state, ${ALIVE}, 1);
  for (;;) {
    const entered = Atomics.load(state, ${ENTERED});
    if (entered <= 0) {
      let end = Atomics.load(state, ${REQUEST}) !== 0;
      if (!end) {
        Atomics.store(state, ${IDLE}, 1);
        const woken = Atomics.wait(state, ${ENTERED}, entered, ${IDLE_LOOP_END_MS});
        Atomics.store(state, ${IDLE}, 0);
        end = woken === 'timed-out' && Atomics.load(state, ${ENTERED}) <= 0;
      }
      if (end) {
        // The host checks ALIVE after announcing an entry: one of the two sees the other.
        Atomics.store(state, ${ALIVE}, 0);
        if (Atomics.load(state, ${ENTERED}) <= 0) return;
        Atomics.store(state, ${ALIVE}, 1);
      }
      continue;
    }
    const slot = Atomics.load(state, ${SLOT});
    const wait = deadline[0] - Date.now();
    if (wait > 0) {
      // Until this entry's deadline, whatever the host does meanwhile: an entry made later ends
      // later, so none can overrun unseen; waking for each would cost what the watchdog saves.
      Atomics.wait(state, ${SLEEP}, 0, wait);
      continue;
    }
    // Claimed only if the host has not ended the entry meanwhile (it swaps it for 0 as it returns).
    if (Atomics.compareExchange(state, ${ENTERED}, entered, -entered) === entered) {
      const isolate = isolates[slot];
      isolates[slot] = undefined;
      try {
        isolate.dispose();
      } catch {}
    }
  }
}
({ register, forget, watch });
`;

interface WatchdogRealm {
  isolate: ivm.Isolate;
  context: ivm.Context;
  register: ivm.Reference<(slot: number, isolate: ivm.Isolate) => void>;
  forget: ivm.Reference<(slot: number) => void>;
  watch: ivm.Reference<(buffer: SharedArrayBuffer) => void>;
}

export class EntryWatchdog {
  /** Entries the watchdog covered, and those it ended. */
  readonly stats = { covered: 0, claimed: 0 };
  private readonly buffer = new SharedArrayBuffer(DEADLINE_BYTE + 8);
  private readonly state = new Int32Array(this.buffer, 0, INT32_SLOTS);
  private readonly deadline = new Float64Array(this.buffer, DEADLINE_BYTE, 1);
  private realm: WatchdogRealm | undefined;
  /** Isolates the watchdog holds, by slot; `pending` ones it has not been handed yet. */
  private readonly slots = new Map<ivm.Isolate, number>();
  /** Isolates not handed over yet, and how many entries each had. */
  private readonly uncovered = new Map<ivm.Isolate, number>();
  private readonly pending = new Set<ivm.Isolate>();
  private readonly forgotten: number[] = [];
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private lastEntry = 0;
  /** The loop and the hand-overs between its runs, while any of it is under way. */
  private cycling: Promise<void> | undefined;
  private closed = false;
  private failed = false;
  private cycleScheduled = false;

  /**
   * Announces an entry into `isolate` that must end by `deadline` (Date.now() ms). Returns the
   * entry's number, to give to `exit`, or 0 when the watchdog does not cover it (the entry must
   * then take isolated-vm's timeout).
   */
  enter(isolate: ivm.Isolate, deadline: number): number {
    const slot = this.slots.get(isolate);
    if (slot === undefined) {
      // Handed over once it has been entered a few times: a cold start's isolate, often entered
      // once, costs no hand-over.
      const entries = (this.uncovered.get(isolate) ?? 0) + 1;
      if (entries < HAND_OVER_AFTER || this.closed || this.failed) this.uncovered.set(isolate, entries);
      else {
        this.uncovered.delete(isolate);
        this.slots.set(isolate, this.takeSlot());
        this.pending.add(isolate);
        this.cycleSoon();
      }
      return 0;
    }
    if (this.pending.has(isolate) || Atomics.load(this.state, ALIVE) !== 1) {
      this.cycleSoon();
      return 0;
    }
    this.lastEntry = this.lastEntry >= 0x7fffffff ? 1 : this.lastEntry + 1;
    const entry = this.lastEntry;
    Atomics.store(this.state, SLOT, slot);
    this.deadline[0] = deadline;
    Atomics.store(this.state, ENTERED, entry);
    // The loop may have just decided to end: then this entry takes isolated-vm's timeout instead.
    if (Atomics.load(this.state, ALIVE) !== 1) {
      Atomics.store(this.state, ENTERED, 0);
      this.cycleSoon();
      return 0;
    }
    if (Atomics.load(this.state, IDLE) === 1) Atomics.notify(this.state, ENTERED);
    this.stats.covered++;
    return entry;
  }

  /**
   * Ends an entry that `enter` announced into `isolate`. True when the watchdog claimed it first:
   * the isolate is disposed (or about to be), whatever the entry returned.
   */
  exit(entry: number, isolate: ivm.Isolate): boolean {
    if (entry === 0) return false;
    if (Atomics.compareExchange(this.state, ENTERED, entry, 0) === entry) return false;
    Atomics.store(this.state, ENTERED, 0);
    this.stats.claimed++;
    // The watchdog has let go of it already.
    const slot = this.slots.get(isolate);
    this.slots.delete(isolate);
    if (slot !== undefined) this.freeSlots.push(slot);
    return true;
  }

  /** The isolate is being disposed by its owner: the watchdog lets go of it. */
  forget(isolate: ivm.Isolate): void {
    this.uncovered.delete(isolate);
    const slot = this.slots.get(isolate);
    if (slot === undefined) return;
    this.slots.delete(isolate);
    if (this.pending.delete(isolate)) this.freeSlots.push(slot);
    else this.forgotten.push(slot);
  }

  /** Whether the loop runs now (it covers entries). */
  get watching(): boolean {
    return Atomics.load(this.state, ALIVE) === 1;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.requestEnd();
    await this.cycling;
    const realm = this.realm;
    this.realm = undefined;
    if (realm && !realm.isolate.isDisposed) realm.isolate.dispose();
  }

  private takeSlot(): number {
    return this.freeSlots.pop() ?? this.nextSlot++;
  }

  private requestEnd(): void {
    Atomics.store(this.state, REQUEST, 1);
    Atomics.notify(this.state, ENTERED);
    Atomics.notify(this.state, SLEEP);
  }

  /** `cycle` after the current turn of the event loop: not on the path of the call that asked for it (a cold start, often). */
  private cycleSoon(): void {
    if (this.cycleScheduled) return;
    this.cycleScheduled = true;
    setImmediate(() => {
      this.cycleScheduled = false;
      this.cycle();
    }).unref();
  }

  /** Starts the loop, or asks it to end so that it can be handed new isolates; the loop starts again after. */
  private cycle(): void {
    if (this.closed || this.failed) return;
    if (this.cycling) {
      if (this.pending.size > 0 || this.forgotten.length > 0) this.requestEnd();
      return;
    }
    this.cycling = this.run()
      .catch(() => {
        // Without the watchdog every entry takes isolated-vm's timeout, as before it.
        this.failed = true;
      })
      .finally(() => {
        this.cycling = undefined;
      });
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      const realm = this.realm ?? this.open();
      // Cleared before the hand-over: a request made during it ends the next loop at once.
      Atomics.store(this.state, REQUEST, 0);
      for (const slot of this.forgotten.splice(0)) {
        await realm.forget.apply(undefined, [slot]);
        this.freeSlots.push(slot);
      }
      for (const isolate of [...this.pending]) {
        const slot = this.slots.get(isolate);
        this.pending.delete(isolate);
        if (slot === undefined || isolate.isDisposed) continue;
        try {
          await realm.register.apply(undefined, [slot, isolate]);
        } catch {
          // Disposed meanwhile: its entries (if any) keep isolated-vm's timeout.
          this.slots.delete(isolate);
          this.freeSlots.push(slot);
        }
      }
      if (this.closed) return;
      try {
        await realm.watch.apply(undefined, [new ivm.ExternalCopy(this.buffer).copyInto({ release: true })]);
      } finally {
        // However the loop ended (its isolate may have failed), nothing covers entries now.
        Atomics.store(this.state, ALIVE, 0);
      }
      // Ended for want of entries (not asked to): nothing to hand over, nothing to watch.
      if (Atomics.load(this.state, REQUEST) === 0 && this.pending.size === 0 && this.forgotten.length === 0) return;
    }
  }

  private open(): WatchdogRealm {
    const isolate = new ivm.Isolate({ memoryLimit: 8 });
    const context = isolate.createContextSync();
    const exports = context.evalSync(WATCHDOG_SOURCE, { reference: true }) as ivm.Reference<Record<string, unknown>>;
    const take = <T>(name: string) => exports.getSync(name, { reference: true }) as unknown as ivm.Reference<T>;
    this.realm = { isolate, context, register: take('register'), forget: take('forget'), watch: take('watch') };
    exports.release();
    return this.realm;
  }
}
