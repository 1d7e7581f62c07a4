// Runs once inside every new V8 isolate, before any function code. It is plain JavaScript read as
// text: nothing here may depend on the host's module system. Its completion value is a function
// that the host calls once with its bridges; what that returns (the internals) is reachable only
// through the host's references. Nothing of the platform is left on the global object, so that a
// function can neither call nor replace it.
(function bootstrap(hostLog, hostTimer, hostClearTimer, hostRandom, hostDone) {
  const global = globalThis;
  // The isolate's memory limit does not cover WebAssembly memory; wasm runs under isolation "wasm".
  delete global.WebAssembly;

  // Built-ins the internals rely on, taken before any function code runs: a function that replaces
  // JSON.stringify or String.prototype.slice changes its own behaviour, not the platform's
  // bookkeeping (log caps, result envelopes, timers). Records are null-prototype objects for the
  // same reason: nothing a function puts on Object.prototype is found on them.
  const reflectApply = Reflect.apply;
  const call = Function.prototype.call;
  const uncurry = (fn) => reflectApply(Function.prototype.bind, call, [fn]);
  const stringify = JSON.stringify;
  const parseJson = JSON.parse;
  const dateNow = Date.now;
  const toText = String;
  const charCodeAt = uncurry(String.prototype.charCodeAt);
  const stringSlice = uncurry(String.prototype.slice);
  const indexOf = uncurry(String.prototype.indexOf);
  const objectToString = uncurry(Object.prototype.toString);
  const createObject = Object.create;
  const NativePromise = Promise;
  const record = () => createObject(null);

  /** The owner of what the function's top-level code (and what it leaves behind) does. */
  const INIT = '#init';
  const MAX_TIMERS = 10000;

  // Per owner (an activation, or INIT): its deadline, whether it has returned, and how many log
  // bytes it may still print. Output after `returned` is leftover output: the host holds it for
  // the next activation. `current` is the owner of the code running now; owners with pending
  // timers are also listed in `lingering`, until their timers are done or their deadline passed.
  let logLimit = 0;
  let current = open(INIT, 0);
  const lingering = record();
  let lingeringCount = 0;
  let entry;
  const timers = record();
  let timerCount = 0;
  let nextTimerId = 1;
  // Envelopes the host has not confirmed yet (it may ask again with `take` when the call that
  // carried one failed), and envelopes it asked for before they were ready (sent with hostDone).
  const settled = record();
  const awaited = record();

  function open(id, deadline) {
    return { id, deadline, returned: false, left: logLimit, truncated: false, sent: 0, timers: 0 };
  }

  /** Marks the owner as returned and gives the number of lines it sent while running. */
  function finish(owner) {
    owner.returned = true;
    return owner.sent;
  }

  /** Drops the timers of owners past their deadline (the host no longer fires them). */
  function sweep(now) {
    if (lingeringCount === 0) return;
    for (const id in lingering) {
      const owner = lingering[id];
      if (owner.deadline > now) continue;
      for (const timerId in timers) {
        const timer = timers[timerId];
        if (timer.owner !== owner) continue;
        dropTimer(timerId, timer);
        hostClearTimer(+timerId);
      }
    }
  }

  // Log lines leave the isolate only within the owner's byte budget, counted in UTF-8 here, so
  // that a function printing a huge line costs the server nothing beyond the limit.
  function post(owner, stream, text) {
    const late = owner.returned;
    if (!late) owner.sent++;
    hostLog(owner.id, stream, text, late);
  }

  function send(owner, stream, text) {
    if (owner.truncated) return;
    const line = typeof text === 'string' ? text : '';
    const left = owner.left;
    const length = line.length;
    let bytes = 0;
    let i = 0;
    while (i < length) {
      const c = charCodeAt(line, i);
      let units = 1;
      let size = c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < length) {
        const next = charCodeAt(line, i + 1);
        if (next >= 0xdc00 && next < 0xe000) {
          size = 4;
          units = 2;
        }
      }
      if (bytes + size > left) break;
      bytes += size;
      i += units;
    }
    if (i === length) {
      owner.left = left - bytes;
      post(owner, stream, `${line}\n`);
      return;
    }
    owner.truncated = true;
    owner.left = 0;
    if (i > 0) post(owner, stream, `${stringSlice(line, 0, i)}\n`);
    post(owner, 'stderr', `Logs were truncated because the total bytes size exceeds the limit of ${logLimit} bytes.\n`);
  }

  function safeText(value) {
    try {
      return toText(value);
    } catch {
      return '[value that cannot be printed]';
    }
  }

  /** Drops the internals' own frames from a stack: the function's frames are what its author needs. */
  function ownFrames(stack) {
    let out = '';
    let start = 0;
    while (start <= stack.length) {
      let end = indexOf(stack, '\n', start);
      if (end < 0) end = stack.length;
      const line = stringSlice(stack, start, end);
      if (indexOf(line, 'isola:bootstrap.js') < 0) out = out === '' ? line : `${out}\n${line}`;
      start = end + 1;
    }
    return out;
  }

  /** What a thrown value says: for an Error, its name, message and stack; otherwise nothing. */
  function describe(thrown) {
    try {
      if (typeof thrown === 'object' && thrown !== null && objectToString(thrown) === '[object Error]') {
        const name = safeText(thrown.name);
        const message = safeText(thrown.message);
        const stack = thrown.stack;
        return {
          name,
          message: message || safeText(thrown),
          stack: typeof stack === 'string' ? ownFrames(stack) : `${name}: ${message}`,
        };
      }
    } catch {
      // A getter that throws: the value is reported as it is below.
    }
    return undefined;
  }

  function thrownText(thrown) {
    const error = describe(thrown);
    return error ? error.stack : safeText(thrown);
  }

  function inspect(value, depth) {
    if (typeof value === 'string') return depth === 0 ? value : stringify(value);
    if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
    if (typeof value === 'bigint') return `${value}n`;
    if (typeof value === 'symbol') return value.toString();
    const error = describe(value);
    if (error) return error.stack;
    if (value === null || typeof value !== 'object') return toText(value);
    try {
      return stringify(value, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));
    } catch {
      return '[object]';
    }
  }

  /** console's formatting; it stops once the line is longer than `max`, which is all that can be sent. */
  function format(args, max) {
    if (typeof args[0] === 'string' && args[0].includes('%') && args.length > 1) {
      let i = 1;
      const head = args[0].replace(/%[sdifjoO%]/g, (m) => {
        if (m === '%%') return '%';
        if (i >= args.length) return m;
        const a = args[i++];
        if (m === '%d' || m === '%i') return String(Number.parseInt(a, 10));
        if (m === '%f') return String(Number.parseFloat(a));
        if (m === '%s') return typeof a === 'string' ? a : inspect(a, 1);
        return inspect(a, 1);
      });
      let out = head;
      for (; i < args.length && out.length <= max; i++) out += ` ${inspect(args[i], 0)}`;
      return out;
    }
    let out = '';
    for (let i = 0; i < args.length && out.length <= max; i++) out += i === 0 ? inspect(args[i], 0) : ` ${inspect(args[i], 0)}`;
    return out;
  }

  const emit = (stream, args) => {
    const owner = current;
    if (owner.truncated) return;
    send(owner, stream, format(args, owner.left));
  };
  const out = (...args) => emit('stdout', args);
  const err = (...args) => emit('stderr', args);
  global.console = {
    log: out,
    info: out,
    debug: out,
    warn: err,
    error: err,
    trace: (...args) => err(...args, new Error('Trace').stack),
    dir: (v) => out(v),
    assert: (cond, ...args) => {
      if (!cond) err('Assertion failed', ...args);
    },
  };

  // Timers belong to the activation that set them and live until its deadline: one that would
  // fire later is never scheduled, as the agreed policy for leftover work clears it there.
  function addTimer(fn, ms, args, interval) {
    if (typeof fn !== 'function') throw new TypeError('The callback must be a function');
    const id = nextTimerId++;
    const delay = Math.max(0, Math.min(Number(ms) || 0, 2147483647));
    const owner = current;
    if (dateNow() + delay > owner.deadline) return id;
    if (timerCount >= MAX_TIMERS) throw new RangeError(`Too many pending timers (at most ${MAX_TIMERS})`);
    timers[id] = { fn, args, owner, interval, delay };
    timerCount++;
    if (owner.timers++ === 0) {
      lingering[owner.id] = owner;
      lingeringCount++;
    }
    hostTimer(id, delay, owner.id, owner.deadline);
    return id;
  }
  function dropTimer(id, timer) {
    delete timers[id];
    timerCount--;
    const owner = timer.owner;
    if (--owner.timers === 0) {
      delete lingering[owner.id];
      lingeringCount--;
    }
  }
  function clearTimer(id) {
    if (typeof id !== 'number') return;
    const timer = timers[id];
    if (timer === undefined) return;
    dropTimer(id, timer);
    hostClearTimer(id);
  }
  global.setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
  global.setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
  global.setImmediate = (fn, ...args) => addTimer(fn, 0, args, false);
  global.clearTimeout = clearTimer;
  global.clearInterval = clearTimer;
  global.clearImmediate = clearTimer;
  global.queueMicrotask = (fn) => {
    Promise.resolve().then(fn);
  };

  function fire(id) {
    const timer = timers[id];
    if (timer === undefined) return;
    const owner = timer.owner;
    const now = dateNow();
    if (now >= owner.deadline) {
      dropTimer(id, timer);
      return;
    }
    if (timer.interval && now + timer.delay <= owner.deadline) hostTimer(id, timer.delay, owner.id, owner.deadline);
    else dropTimer(id, timer);
    current = owner;
    try {
      reflectApply(timer.fn, undefined, timer.args);
    } catch (error) {
      send(owner, 'stderr', `Uncaught exception: ${thrownText(error)}`);
    }
  }

  function randomBytes(n) {
    const hex = hostRandom(n);
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = Number.parseInt(hex.substr(i * 2, 2), 16);
    return bytes;
  }
  global.crypto = {
    getRandomValues(array) {
      if (!ArrayBuffer.isView(array)) throw new TypeError('Expected an integer TypedArray');
      if (array.byteLength > 65536) throw new RangeError('getRandomValues accepts at most 65536 bytes');
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(randomBytes(array.byteLength));
      return array;
    },
    randomUUID() {
      const b = randomBytes(16);
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  };

  class TextEncoder {
    get encoding() {
      return 'utf-8';
    }
    encode(input = '') {
      const s = unescape(encodeURIComponent(String(input)));
      const bytes = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
      return bytes;
    }
  }
  class TextDecoder {
    get encoding() {
      return 'utf-8';
    }
    decode(input) {
      if (input === undefined) return '';
      const bytes = input instanceof Uint8Array ? input : new Uint8Array(input.buffer || input);
      let s = '';
      for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
      try {
        return decodeURIComponent(escape(s));
      } catch {
        return s;
      }
    }
  }
  global.TextEncoder = TextEncoder;
  global.TextDecoder = TextDecoder;
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  global.btoa = (input) => {
    const s = String(input);
    let outStr = '';
    for (let i = 0; i < s.length; i += 3) {
      const a = s.charCodeAt(i);
      const b = s.charCodeAt(i + 1);
      const c = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new Error('btoa: the string contains characters outside Latin1');
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      outStr += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
      outStr += i + 1 < s.length ? B64[(n >> 6) & 63] : '=';
      outStr += i + 2 < s.length ? B64[n & 63] : '=';
    }
    return outStr;
  };
  global.atob = (input) => {
    const s = String(input).replace(/[\s=]/g, '');
    let outStr = '';
    let bits = 0;
    let buffer = 0;
    for (const ch of s) {
      const v = B64.indexOf(ch);
      if (v < 0) throw new Error('atob: the string is not valid base64');
      buffer = (buffer << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        outStr += String.fromCharCode((buffer >> bits) & 255);
      }
    }
    return outStr;
  };
  const origin = Date.now();
  global.performance = { now: () => Date.now() - origin, timeOrigin: origin };
  global.structuredClone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
  global.self = global;

  const requireUnavailable = (name) => {
    throw new Error(
      `require('${name}') is not available under isolation "isolate", which has no Node.js APIs; ` +
        'deploy with the annotation isolation=process (or container, gvisor, microvm) to use Node.js modules.',
    );
  };

  /** The envelope of a failure: an Error's message (its stack goes to the owner's stderr), or the thrown value. */
  function errorEnvelope(owner, thrown) {
    const error = describe(thrown);
    let json;
    let name = '';
    if (error) {
      send(owner, 'stderr', error.stack);
      json = stringify(error.message);
      name = error.name;
    } else if (thrown === undefined) {
      json = stringify('The function rejected with undefined.');
    } else {
      try {
        json = stringify(thrown);
      } catch {
        // Not JSON (a cycle, a BigInt, too deep): its text instead.
      }
      if (typeof json !== 'string') json = stringify(safeText(thrown));
    }
    return `{"err":${json},"name":${stringify(name)},"logs":${finish(owner)}}`;
  }

  function resultEnvelope(owner, result) {
    let json;
    try {
      json = stringify(result === undefined ? null : result);
    } catch (error) {
      const reason = describe(error)?.message ?? safeText(error);
      const message = `The function's result cannot be serialised as JSON: ${reason}`;
      return `{"err":${stringify(message)},"name":"","logs":${finish(owner)}}`;
    }
    // A function or a symbol has no JSON: no result.
    if (typeof json !== 'string') json = 'null';
    return `{"ok":${json},"logs":${finish(owner)}}`;
  }

  function settle(owner, envelope) {
    if (awaited[owner.id] === true) {
      delete awaited[owner.id];
      hostDone(owner.id, envelope);
    } else {
      settled[owner.id] = envelope;
    }
  }

  /** Settles the owner with the envelope of what `produce` gives (awaited), or of what it throws. */
  async function execute(owner, produce) {
    let envelope;
    try {
      const result = await produce();
      current = owner;
      envelope = resultEnvelope(owner, result);
    } catch (error) {
      current = owner;
      envelope = errorEnvelope(owner, error);
    }
    settle(owner, envelope);
    return envelope;
  }

  /** `acks`: ids, one per line, whose envelopes the host has received and no longer needs. */
  function begin(id, paramsJson, deadline, acks) {
    const owner = enter(id, deadline, acks);
    return execute(owner, () => entry(parseJson(paramsJson)));
  }

  function enter(id, deadline, acks) {
    if (acks) {
      let start = 0;
      while (start <= acks.length) {
        let end = indexOf(acks, '\n', start);
        if (end < 0) end = acks.length;
        delete settled[stringSlice(acks, start, end)];
        start = end + 1;
      }
    }
    sweep(dateNow());
    const owner = open(id, deadline);
    current = owner;
    return owner;
  }

  // The host's fast path calls `start` synchronously on its own thread. A function that returns a
  // value (not a thenable) is answered by `start` itself, in the same entry: what its leftover
  // microtasks print comes after it returned, as for any function. For a thenable, `start` gives
  // nothing and the host calls `take` once the entry's microtasks have run: a function settled
  // by then is answered there; one still awaiting something (a timer) reports through hostDone
  // when it settles. The asynchronous path calls `run` and gets the envelope as the promise's value.
  // The last envelope `start` gave is kept until the next one: the host asks `take` for it when
  // the entry ended with a rejection nobody handled, which loses the entry's own value.
  let startedId;
  let startedEnvelope;
  function start(id, paramsJson, deadline, acks) {
    const owner = enter(id, deadline, acks);
    startedId = undefined;
    startedEnvelope = undefined;
    let envelope;
    try {
      const result = entry(parseJson(paramsJson));
      if ((typeof result === 'object' && result !== null) || typeof result === 'function') {
        // Read once, as await reads it.
        const then = result.then;
        if (typeof then === 'function') {
          const given = new NativePromise((resolve, reject) => reflectApply(then, result, [resolve, reject]));
          execute(owner, () => given);
          return undefined;
        }
      }
      current = owner;
      envelope = resultEnvelope(owner, result);
    } catch (error) {
      current = owner;
      envelope = errorEnvelope(owner, error);
    }
    startedId = id;
    startedEnvelope = envelope;
    return envelope;
  }

  function take(id) {
    if (startedId === id) {
      const envelope = startedEnvelope;
      startedId = undefined;
      startedEnvelope = undefined;
      return envelope;
    }
    const envelope = settled[id];
    if (envelope !== undefined) {
      delete settled[id];
      return envelope;
    }
    awaited[id] = true;
    return undefined;
  }

  /** Runs the function's top-level code (compiled by the host as a CommonJS-style module function). */
  function load(moduleFunction, mainName, filename, limit, deadline) {
    logLimit = limit;
    const owner = open(INIT, deadline);
    current = owner;
    let envelope;
    try {
      const module = { exports: {} };
      const local = reflectApply(moduleFunction, module.exports, [module.exports, requireUnavailable, module, filename, '.']);
      const exported = module.exports;
      const candidates = [
        exported !== null && typeof exported === 'object' ? exported[mainName] : undefined,
        typeof exported === 'function' && mainName === 'main' ? exported : undefined,
        typeof exported === 'function' ? exported[mainName] : undefined,
        local,
      ];
      for (let i = 0; i < 4 && entry === undefined; i++) if (typeof candidates[i] === 'function') entry = candidates[i];
      if (entry === undefined)
        throw new Error(`The function has no entry point "${mainName}": define function ${mainName}(params) or export it.`);
      envelope = `{"ok":true,"logs":${finish(owner)}}`;
    } catch (error) {
      current = owner;
      envelope = errorEnvelope(owner, error);
    }
    settled[INIT] = envelope;
    return envelope;
  }

  return {
    load,
    run: begin,
    start,
    take,
    fire,
  };
});
