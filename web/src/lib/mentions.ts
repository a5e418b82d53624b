/**
 * @mention autocomplete for the Message box, pure text logic. The server's rule (docs/rooms-and-chat.md,
 * "Mentions"): `@name` mentions a member whose display name without spaces equals `name` (ignoring case),
 * `@[Display Name]` works for names with spaces, and an `@` right after a letter or digit (an email) is not
 * a mention.
 */

export interface MentionQuery {
  /** Where the `@` is in the text. */
  start: number;
  /** What was typed after it, up to the caret. */
  text: string;
}

/** The mention being typed at `caret`, if any. */
export function mentionAt(value: string, caret: number): MentionQuery | null {
  const before = value.slice(0, caret);
  const match = /(^|[^\p{L}\p{N}])@(\[[^\]\n]*|[\p{L}\p{N}_.-]*)$/u.exec(before);
  if (!match) return null;
  const typed = match[2] ?? "";
  return { start: before.length - typed.length - 1, text: typed.startsWith("[") ? typed.slice(1) : typed };
}

/** How a name is written so that the server reads it as a mention. */
export function mentionToken(displayName: string): string {
  return /\s/.test(displayName) ? `@[${displayName}]` : `@${displayName}`;
}

/** The names that fit what was typed: prefix matches of the name (or a word of it) first, at most `max`. */
export function suggest<T extends { display_name: string }>(people: readonly T[], text: string, max = 6): T[] {
  const want = text.toLowerCase().replace(/\s+/g, "");
  const scored: [number, T][] = [];
  for (const person of people) {
    const name = person.display_name.toLowerCase();
    const compact = name.replace(/\s+/g, "");
    let score = -1;
    if (compact.startsWith(want)) score = 0;
    else if (name.split(/\s+/).some((word) => word.startsWith(want))) score = 1;
    else if (want !== "" && compact.includes(want)) score = 2;
    if (score >= 0) scored.push([score, person]);
  }
  scored.sort((a, b) => a[0] - b[0] || a[1].display_name.localeCompare(b[1].display_name));
  return scored.slice(0, max).map(([, person]) => person);
}

/** The text with the mention at `query` replaced by `displayName`'s token and a space; the new caret. */
export function insertMention(
  value: string,
  caret: number,
  query: MentionQuery,
  displayName: string,
): { value: string; caret: number } {
  const token = mentionToken(displayName) + " ";
  const after = value.slice(caret).replace(/^\]/, "");
  const next = value.slice(0, query.start) + token + after;
  return { value: next, caret: query.start + token.length };
}
