/**
 * The editors' language support, one chunk per language (this folder's `lang-*.ts`), fetched when a file (or a
 * contest submission) of that language opens and at most once. The workspace screen asks for it while the editor's
 * own chunk loads, so the two arrive together rather than one after the other.
 */
import type { Extension } from "@codemirror/state";

import { languageOf } from "../workspaces";

export type LanguageName = ReturnType<typeof languageOf>;

const LOADERS: Record<Exclude<LanguageName, "text">, () => Promise<{ support: () => Extension }>> = {
  python: () => import("./lang-python"),
  javascript: () => import("./lang-javascript"),
  cpp: () => import("./lang-cpp"),
};
const loaded = new Map<LanguageName, Promise<Extension>>();

/** A language's support (none for plain text); a failed load is tried again next time. */
export function languageSupport(name: LanguageName): Promise<Extension> {
  if (name === "text") return Promise.resolve([]);
  let support = loaded.get(name);
  if (!support) {
    support = LOADERS[name]().then((module) => module.support());
    support.catch(() => loaded.delete(name));
    loaded.set(name, support);
  }
  return support;
}

/** The language support of a file, by its name. */
export function languageFor(path: string): Promise<Extension> {
  return languageSupport(languageOf(path));
}
