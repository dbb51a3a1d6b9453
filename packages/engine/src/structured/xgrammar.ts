/**
 * Loading xgrammar's WebAssembly build (`@mlc-ai/web-xgrammar`) in Node.
 *
 * The package (0.1.27) ships a UMD bundle as `lib/index.js` inside a `"type": "module"` package: Node then loads it
 * as an ES module, where the bundle's `require` and `exports` do not exist ("ReferenceError: require is not defined
 * in ES module scope"). The bundle itself is plain CommonJS-compatible code, so it is compiled here as a CommonJS
 * module (`Module.prototype._compile`, what `require` does for a `.cjs` file) and its exports used. Loaded once, on
 * first use (the WebAssembly is embedded in the bundle; no file or network access beyond reading it).
 * @module
 */
import { readFileSync } from 'node:fs';
import { createRequire, Module } from 'node:module';
import { dirname } from 'node:path';
import { EngineError } from '../errors.js';

/** The part of xgrammar's API kvq uses (see `@mlc-ai/web-xgrammar/lib/xgrammar.d.ts`). */
interface XgTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}
/** A grammar compiled against a tokenizer. */
export interface XgCompiledGrammar {
  dispose(): void;
}
/** Compiles grammars for one tokenizer (with xgrammar's cache). */
export interface XgGrammarCompiler {
  compileJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean): Promise<XgCompiledGrammar>;
  compileBuiltinJSONGrammar(): Promise<XgCompiledGrammar>;
  compileGrammar(grammar: string, rootRule?: string): Promise<XgCompiledGrammar>;
  compileStructuralTag(tag: Record<string, unknown>): Promise<XgCompiledGrammar>;
  dispose(): void;
}
/** The matching state of one sequence. */
export interface XgGrammarMatcher {
  acceptToken(tokenId: number, verbose?: boolean): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}
/** The module's classes. */
export interface Xgrammar {
  TokenizerInfo: {
    createTokenizerInfo(encodedVocab: string[], vocabType?: string, prependSpace?: boolean, vocabSize?: number, stopTokenIds?: number[]): Promise<XgTokenizerInfo>;
  };
  GrammarCompiler: { createGrammarCompiler(info: XgTokenizerInfo, cacheEnabled?: boolean): Promise<XgGrammarCompiler> };
  GrammarMatcher: { createGrammarMatcher(grammar: XgCompiledGrammar, overrideStopTokens?: number[]): Promise<XgGrammarMatcher> };
}

let loaded: Xgrammar | undefined;

/**
 * xgrammar's classes.
 * @throws EngineError `STRUCTURED_OUTPUT` when the package cannot be found or loaded.
 */
export function xgrammar(): Xgrammar {
  if (loaded) return loaded;
  let path: string;
  try {
    path = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar/lib/index.js');
  } catch (cause) {
    throw new EngineError('STRUCTURED_OUTPUT', 'structured outputs need the package @mlc-ai/web-xgrammar (a dependency of @kvq/engine): reinstall it', { cause });
  }
  try {
    const mod = new Module(path) as Module & { _compile(code: string, filename: string): void; paths: string[]; filename: string };
    mod.filename = path;
    mod.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(dirname(path));
    mod._compile(readFileSync(path, 'utf8'), path);
    loaded = mod.exports as Xgrammar;
  } catch (cause) {
    throw new EngineError('STRUCTURED_OUTPUT', `${path}: cannot load xgrammar (${(cause as Error).message})`, { file: path, cause });
  }
  return loaded;
}
