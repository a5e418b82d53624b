/**
 * CodeMirror 6 as the app's code editors share it: a small setup (no autocompletion, search or lint, so the
 * chunk stays small), the look, and `openCodeEditor`, a plain editor (no shared document) for a contest's
 * submission. Syntax highlighting for Python, JavaScript and C/C++ comes per language from `lib/languages/`
 * (a chunk each, loaded when needed: the text shows at once and is highlighted once its language arrives). `lib/editor.ts` builds the workspace's
 * collaborative editor on the same setup. Imported with `import()` by those screens only, so CodeMirror is in
 * no other page's load (docs/web.md, "The workspace screen", "The contest screens").
 */
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

import { type LanguageName, languageSupport } from "./languages";

export { EditorState, EditorView };
export type { LanguageName };

export const theme = EditorView.theme({
  "&": { border: "1px solid var(--border)", borderRadius: "var(--radius)", background: "var(--surface)" },
  "&.cm-focused": { outline: "3px solid var(--focus)", outlineOffset: "2px" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", minHeight: "16rem" },
  ".cm-content": { minHeight: "16rem" },
  // Everyone's name stays on their cursor (y-codemirror.next shows it only on hover by default).
  ".cm-ySelectionInfo": { opacity: "1", fontFamily: "system-ui, sans-serif", fontSize: "0.75rem", top: "-1.15em" },
});

/**
 * The editing setup both editors use. Tab is not bound, so it moves the focus on (keyboard users are never
 * trapped). Undo is the caller's: y-codemirror's (one's own edits) in a workspace, CodeMirror's history here.
 */
export function setup(): Extension[] {
  return [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    drawSelection(),
    indentOnInput(),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    bracketMatching(),
    highlightActiveLine(),
    theme,
    EditorView.lineWrapping,
  ];
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

/** A plain editor (no shared document), with the shared setup and its own undo history. */
export function openCodeEditor(parent: HTMLElement, options: CodeEditorOptions): CodeEditor {
  const languageSlot = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: options.doc,
      extensions: [
        ...setup(),
        history(),
        keymap.of([...defaultKeymap, ...historyKeymap]),
        languageSlot.of([]), // filled in once the language's chunk has loaded
        EditorView.contentAttributes.of({ "aria-label": options.label }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) options.onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  let destroyed = false;
  let wanted = options.language;
  const apply = (name: LanguageName): void => {
    wanted = name;
    languageSupport(name).then(
      (support) => {
        if (!destroyed && wanted === name) view.dispatch({ effects: languageSlot.reconfigure(support) });
      },
      () => {}, // without highlighting, the text is still edited as plain text
    );
  };
  apply(options.language);
  return {
    view,
    setLanguage: apply,
    destroy() {
      destroyed = true;
      view.destroy();
    },
  };
}
