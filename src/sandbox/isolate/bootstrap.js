// Runs once inside every new V8 isolate, before any function code. It is plain JavaScript read as
// text: nothing here may depend on the host's module system. The host installs five bridges as
// globals; this script captures them in a closure and removes them from the global scope.
((global) => {
  const hostLog = global.__isola_log;
  const hostTimer = global.__isola_timer;
  const hostClearTimer = global.__isola_clear_timer;
  const hostRandom = global.__isola_random;
  const hostDone = global.__isola_done;
  delete global.__isola_log;
  delete global.__isola_timer;
  delete global.__isola_clear_timer;
  delete global.__isola_random;
  delete global.__isola_done;
  // The isolate's memory limit does not cover WebAssembly memory; wasm runs under isolation "wasm".
  delete global.WebAssembly;

  let current = '';
  const MAX_TIMERS = 10000;
  const timers = new Map();
  let nextTimerId = 1;

  function inspect(value, depth) {
    if (typeof value === 'string') return depth === 0 ? value : JSON.stringify(value);
    if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
    if (typeof value === 'bigint') return `${value}n`;
    if (typeof value === 'symbol') return value.toString();
    if (value instanceof Error) return value.stack || `${value.name}: ${value.message}`;
    if (value === null || typeof value !== 'object') return String(value);
    try {
      return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v));
    } catch {
      return '[object]';
    }
  }

  function format(args) {
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
      return [head, ...args.slice(i).map((a) => inspect(a, 0))].join(' ');
    }
    return args.map((a) => inspect(a, 0)).join(' ');
  }

  // Log lines sent per activation: the host waits until it has received them all.
  const sent = new Map();
  const emit = (stream, args) => {
    sent.set(current, (sent.get(current) ?? 0) + 1);
    hostLog(current, stream, `${format(args)}\n`);
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

  function addTimer(fn, ms, args, interval) {
    if (typeof fn !== 'function') throw new TypeError('The callback must be a function');
    if (timers.size >= MAX_TIMERS) throw new RangeError(`Too many pending timers (at most ${MAX_TIMERS})`);
    const id = nextTimerId++;
    const delay = Math.max(0, Math.min(Number(ms) || 0, 2147483647));
    timers.set(id, { fn, args, owner: current, interval, delay });
    hostTimer(id, delay);
    return id;
  }
  function clearTimer(id) {
    if (timers.delete(id)) hostClearTimer(id);
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
  global.__isola_fire = (id) => {
    const timer = timers.get(id);
    if (!timer) return;
    if (timer.interval) hostTimer(id, timer.delay);
    else timers.delete(id);
    current = timer.owner;
    try {
      timer.fn(...timer.args);
    } catch (e) {
      err('Uncaught exception in timer:', e);
    }
  };

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

  function describe(error) {
    if (error instanceof Error) {
      if (error.stack) err(error.stack);
      return error.message || String(error);
    }
    if (error === undefined) return 'The function rejected with undefined.';
    return error;
  }

  let entry;
  global.__isola_require = (name) => {
    throw new Error(
      `require('${name}') is not available under isolation "isolate", which has no Node.js APIs; ` +
        'deploy with the annotation isolation=process (or container, gvisor, microvm) to use Node.js modules.',
    );
  };
  global.__isola_resolve = (exported, local, mainName) => {
    const candidates = [
      exported !== null && typeof exported === 'object' ? exported[mainName] : undefined,
      typeof exported === 'function' && mainName === 'main' ? exported : undefined,
      typeof exported === 'function' ? exported[mainName] : undefined,
      local,
    ];
    entry = candidates.find((c) => typeof c === 'function');
    if (!entry)
      throw new Error(`The function has no entry point "${mainName}": define function ${mainName}(params) or export it.`);
  };
  const logsSent = (id) => {
    const n = sent.get(id) ?? 0;
    sent.delete(id);
    return n;
  };
  global.__isola_run = async (id, paramsJson) => {
    current = id;
    try {
      const result = await entry(JSON.parse(paramsJson));
      current = id;
      try {
        return JSON.stringify({ ok: result === undefined ? null : result, logs: logsSent(id) });
      } catch (e) {
        return JSON.stringify({ err: `The function returned a value that is not JSON: ${e.message}`, logs: logsSent(id) });
      }
    } catch (e) {
      current = id;
      const described = describe(e);
      try {
        return JSON.stringify({ err: described, logs: logsSent(id) });
      } catch {
        return JSON.stringify({ err: String(described), logs: logsSent(id) });
      }
    }
  };

  // The host's fast path calls __isola_start and then __isola_take, both synchronously on its own
  // thread: a function that finishes within its microtasks is answered by __isola_take; one still
  // awaiting something (a timer) reports through the __isola_done bridge when it settles.
  const startedSync = new Set();
  const settledSync = new Map();
  global.__isola_start = (id, paramsJson) => {
    startedSync.add(id);
    global.__isola_run(id, paramsJson).then((envelope) => {
      if (startedSync.delete(id)) settledSync.set(id, envelope);
      else hostDone(id, envelope);
    });
  };
  global.__isola_take = (id) => {
    if (startedSync.delete(id)) return undefined;
    const envelope = settledSync.get(id);
    settledSync.delete(id);
    return envelope;
  };
})(globalThis);
