/**
 * The collaborative editor: CodeMirror 6 bound to one file's `Y.Text` with the official `y-codemirror.next`
 * (shared text, undo of one's own edits, and everyone's cursors and selections from Yjs awareness, each
 * with its user's name and colour), on the setup of `lib/codemirror.ts`. Imported with `import()` by the
 * workspace screen only, so CodeMirror and Yjs are in no other page's load (docs/web.md, "The workspace screen").
 */
import { defaultKeymap } from "@codemirror/commands";
import { keymap } from "@codemirror/view";
import { yCollab } from "y-codemirror.next";
import type { Awareness } from "y-protocols/awareness";
import * as Y from "yjs";

import { EditorState, EditorView, language, setup } from "./codemirror";
import { languageOf } from "./workspaces";

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
  const state = EditorState.create({
    doc: text.toString(),
    extensions: [
      ...setup(),
      keymap.of(defaultKeymap),
      language(languageOf(options.path)),
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
  return {
    view,
    destroy() {
      view.destroy();
      undoManager.destroy();
    },
  };
}
