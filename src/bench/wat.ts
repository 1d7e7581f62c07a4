import wabtInit from 'wabt';

let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** Assembles WebAssembly text into a base64 module, for tests that need a module of a given shape. */
export async function wat(source: string): Promise<string> {
  wabt ??= await wabtInit();
  const module = wabt.parseWat('test.wat', source);
  try {
    return Buffer.from(module.toBinary({}).buffer).toString('base64');
  } finally {
    module.destroy();
  }
}
