/**
 * The collaborative editor: CodeMirror 6 bound to one file's `Y.Text` with the official `y-codemirror.next`
 * (shared text, undo of one's own edits, and everyone's cursors and selections from Yjs awareness, each
 * with its user's name and colour). Imported with `import()` by the workspace screen only, so CodeMirror is
 * in no other page's load (docs/web.md, "The workspace screen"). Each language's support (Python, JavaScript,
 * C/C++) is a chunk of its own, loaded when a file of that language opens: the editor shows the text at once
 * and highlights it once its language has arrived.
 */
import { defaultKeymap } from "@codemirror/commands";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Compartment, EditorState } from "@codemirror/state";
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { yCollab } from "y-codemirror.next";
import type { Awareness } from "y-protocols/awareness";
import * as Y from "yjs";

import { languageFor } from "./languages";

export interface EditorOptions {
  path: string;
  readOnly: boolean;
}

export interface FileEditor {
  view: EditorView;
  destroy(): void;
}

const theme = EditorView.theme({
  "&": { border: "1px solid var(--border)", borderRadius: "var(--radius)", background: "var(--surface)" },
  "&.cm-focused": { outline: "3px solid var(--focus)", outlineOffset: "2px" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", minHeight: "16rem" },
  ".cm-content": { minHeight: "16rem" },
  // Everyone's name stays on their cursor (y-codemirror.next shows it only on hover by default).
  ".cm-ySelectionInfo": { opacity: "1", fontFamily: "system-ui, sans-serif", fontSize: "0.75rem", top: "-1.15em" },
});

/** An editor of `text` in `parent`; readers get a read-only one (their awareness still shows their cursor). */
export function openEditor(parent: HTMLElement, text: Y.Text, awareness: Awareness, options: EditorOptions): FileEditor {
  const undoManager = new Y.UndoManager(text);
  const language = new Compartment();
  const state = EditorState.create({
    doc: text.toString(),
    extensions: [
      // A small setup (no autocompletion, search or lint: the chunk stays small). Tab is not bound, so it
      // moves the focus on (keyboard users are never trapped); undo is y-codemirror's (one's own edits).
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      drawSelection(),
      indentOnInput(),
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      bracketMatching(),
      highlightActiveLine(),
      keymap.of(defaultKeymap),
      language.of([]), // filled in once the language's chunk has loaded
      theme,
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({
        "aria-label": "Editor",
        "aria-readonly": options.readOnly ? "true" : "false",
        "aria-describedby": "editor-mode",
      }),
      EditorState.readOnly.of(options.readOnly),
      yCollab(text, awareness, { undoManager }),
    ],
  });
  const view = new EditorView({ state, parent });
  let destroyed = false;
  languageFor(options.path).then(
    (support) => {
      if (!destroyed) view.dispatch({ effects: language.reconfigure(support) });
    },
    () => {}, // without highlighting, the file is still edited as plain text
  );
  return {
    view,
    destroy() {
      destroyed = true;
      view.destroy();
      undoManager.destroy();
    },
  };
}
