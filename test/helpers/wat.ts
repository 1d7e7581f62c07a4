import wabtInit from 'wabt';

let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** Assembles WebAssembly text into a base64 module (the harness's probes, tests' modules of a given shape). */
export async function wat(source: string): Promise<string> {
  wabt ??= await wabtInit();
  const module = wabt.parseWat('module.wat', source);
  try {
    return Buffer.from(module.toBinary({}).buffer).toString('base64');
  } finally {
    module.destroy();
  }
}
