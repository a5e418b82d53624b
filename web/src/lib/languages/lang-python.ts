/** CodeMirror's Python support, in a chunk of its own (loaded by `lib/editor.ts` for a `.py` file only). */
export { python as support } from "@codemirror/lang-python";
