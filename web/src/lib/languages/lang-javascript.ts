/** CodeMirror's JavaScript support (with its autocompletion and lint packages), in a chunk of its own (loaded by
 * `lib/editor.ts` for a `.js`/`.ts` file only). */
export { javascript as support } from "@codemirror/lang-javascript";
