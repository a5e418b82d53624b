/** CodeMirror's C/C++ support, in a chunk of its own (loaded by `lib/editor.ts` for a C or C++ file only). */
export { cpp as support } from "@codemirror/lang-cpp";
