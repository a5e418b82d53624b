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

/** A piece of a shown text: plain, or a mention (written as `@Name`, without the brackets it was typed with). */
export interface TextPart {
  text: string;
  mention: boolean;
}

// The server's rule (core_api/mentions.py): not after a letter, digit, `_` or `@`; a bare name drops a trailing `.` or `-`.
const MENTION = /(?<![\p{L}\p{N}_@])@(?:\[([^\]\n]{1,64})\]|([\p{L}\p{N}_.-]{1,64}))/gu;

/** A message or post body cut into plain text and mentions, for showing mentions as names. */
export function mentionParts(body: string): TextPart[] {
  const parts: TextPart[] = [];
  let at = 0;
  for (const match of body.matchAll(MENTION)) {
    const start = match.index;
    const bracketed = match[1];
    const bare = (match[2] ?? "").replace(/[.-]+$/, "");
    if (bracketed === undefined && bare === "") continue;
    const end = bracketed !== undefined ? start + match[0].length : start + 1 + bare.length;
    if (start > at) parts.push({ text: body.slice(at, start), mention: false });
    parts.push({ text: "@" + (bracketed ?? bare), mention: true });
    at = end;
  }
  if (at < body.length) parts.push({ text: body.slice(at), mention: false });
  return parts;
}
