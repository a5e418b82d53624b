/**
 * The collaborative editor: CodeMirror 6 bound to one file's `Y.Text` with the official `y-codemirror.next`
 * (shared text, undo of one's own edits, and everyone's cursors and selections from Yjs awareness, each
 * with its user's name and colour), on the setup of `lib/codemirror.ts`. Imported with `import()` by the
 * workspace screen only, so CodeMirror and Yjs are in no other page's load (docs/web.md, "The workspace screen").
 * Each language's support (Python, JavaScript, C/C++) is a chunk of its own, loaded when a file of that language
 * opens: the editor shows the text at once and highlights it once its language has arrived.
 */
import { defaultKeymap } from "@codemirror/commands";
import { Compartment } from "@codemirror/state";
import { keymap } from "@codemirror/view";
import { yCollab } from "y-codemirror.next";
import type { Awareness } from "y-protocols/awareness";
import * as Y from "yjs";

import { EditorState, EditorView, setup } from "./codemirror";
import { languageFor } from "./languages";

export interface EditorOptions {
  path: string;
  readOnly: boolean;
}

export interface FileEditor {
  view: EditorView;
  destroy(): void;
}

/** An editor of `text` in `parent`; readers get a read-only one (their awareness still shows their cursor). */
export function openEditor(parent: HTMLElement, text: Y.Text, awareness: Awareness, options: EditorOptions): FileEditor {
  const undoManager = new Y.UndoManager(text);
  const language = new Compartment();
  const state = EditorState.create({
    doc: text.toString(),
    extensions: [
      ...setup(),
      keymap.of(defaultKeymap),
      language.of([]), // filled in once the language's chunk has loaded
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
