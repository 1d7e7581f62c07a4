// The WebAssembly JavaScript API as Node.js 20 provides it. TypeScript only ships these types in
// its DOM libraries, which would bring every browser global with them.
declare namespace WebAssembly {
  type ImportExportKind = 'function' | 'global' | 'memory' | 'table' | 'tag';
  interface ModuleImportDescriptor {
    module: string;
    name: string;
    kind: ImportExportKind;
  }
  interface ModuleExportDescriptor {
    name: string;
    kind: ImportExportKind;
  }
  // An opaque handle: nothing is read from a compiled module but through the functions below.
  // biome-ignore lint/complexity/noBannedTypes: opaque by design
  type Module = {};
  const Module: {
    prototype: Module;
    new (bytes: BufferSource): Module;
    exports(module: Module): ModuleExportDescriptor[];
    imports(module: Module): ModuleImportDescriptor[];
    customSections(module: Module, sectionName: string): ArrayBuffer[];
  };
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
    shared?: boolean;
  }
  interface Memory {
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  const Memory: {
    prototype: Memory;
    new (descriptor: MemoryDescriptor): Memory;
  };
  interface Table {
    readonly length: number;
  }
  interface Global {
    value: unknown;
  }
  type ExportValue = ((...args: never[]) => unknown) | Global | Memory | Table;
  type Exports = Record<string, ExportValue>;
  type ImportValue = ExportValue | number | bigint;
  type ModuleImports = Record<string, ImportValue>;
  type Imports = Record<string, ModuleImports>;
  interface Instance {
    readonly exports: Exports;
  }
  const Instance: {
    prototype: Instance;
    new (module: Module, importObject?: Imports): Instance;
  };
  interface WebAssemblyInstantiatedSource {
    instance: Instance;
    module: Module;
  }
  class CompileError extends Error {}
  class LinkError extends Error {}
  class RuntimeError extends Error {}
  function compile(bytes: BufferSource): Promise<Module>;
  function validate(bytes: BufferSource): boolean;
  function instantiate(module: Module, importObject?: Imports): Promise<Instance>;
  function instantiate(bytes: BufferSource, importObject?: Imports): Promise<WebAssemblyInstantiatedSource>;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
