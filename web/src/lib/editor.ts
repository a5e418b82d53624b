/**
 * The code editors: CodeMirror 6 bound to one file's `Y.Text` with the official `y-codemirror.next`
 * (shared text, undo of one's own edits, and everyone's cursors and selections from Yjs awareness, each
 * with its user's name and colour) for workspaces, and a plain one (`openCodeEditor`) for a contest's
 * submission. Imported with `import()` by those screens only, so CodeMirror is in no other page's load
 * (docs/web.md, "The workspace screen", "The contest screens").
 */
import { cpp } from "@codemirror/lang-cpp";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Compartment, EditorState, type Extension } from "@codemirror/state";
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

import { languageOf } from "./workspaces";

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

type LanguageName = ReturnType<typeof languageOf>;

function language(name: LanguageName): Extension {
  switch (name) {
    case "python":
      return python();
    case "javascript":
      return javascript();
    case "cpp":
      return cpp();
    default:
      return [];
  }
}

/** An editor of `text` in `parent`; readers get a read-only one (their awareness still shows their cursor). */
export function openEditor(parent: HTMLElement, text: Y.Text, awareness: Awareness, options: EditorOptions): FileEditor {
  const undoManager = new Y.UndoManager(text);
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
      language(languageOf(options.path)),
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
  return {
    view,
    destroy() {
      view.destroy();
      undoManager.destroy();
    },
  };
}

export interface CodeEditorOptions {
  /** The text it starts with. */
  doc: string;
  language: LanguageName;
  /** Called with the whole text after every change. */
  onChange: (text: string) => void;
  /** The content element's accessible name. */
  label: string;
}

export interface CodeEditor {
  view: EditorView;
  /** Another language's highlighting, keeping the text. */
  setLanguage(name: LanguageName): void;
  destroy(): void;
}

/** A plain editor (no shared document), with the same small setup and its own undo history. */
export function openCodeEditor(parent: HTMLElement, options: CodeEditorOptions): CodeEditor {
  const languageSlot = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: options.doc,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightSpecialChars(),
        history(),
        drawSelection(),
        indentOnInput(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        bracketMatching(),
        highlightActiveLine(),
        keymap.of([...defaultKeymap, ...historyKeymap]),
        languageSlot.of(language(options.language)),
        theme,
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ "aria-label": options.label }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) options.onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    setLanguage(name) {
      view.dispatch({ effects: languageSlot.reconfigure(language(name)) });
    },
    destroy() {
      view.destroy();
    },
  };
}
