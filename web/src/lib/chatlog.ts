/**
 * A room's chat messages as the client holds them: kept in `seq` order, each seq once, each message at its
 * newest revision. Pure (no transport, no Svelte): `lib/room.ts` feeds it from `room:join`, `chat:history`,
 * `chat:message`, `chat:updated` and `chat:reactions`, and asks it where to resume after a reconnect.
 *
 * The server's rules this follows (docs/rooms-and-chat.md, "Community chat"):
 * - `seq` grows by exactly one per room, with no holes (a rolled-back send gives its number back), so a
 *   run of held messages is complete exactly when its seqs are consecutive;
 * - a message may reach the client twice (its live `chat:message` and a history page that overlaps it):
 *   the same seq is kept once;
 * - `rev` grows with every edit, delete or reaction change: updates are applied only when newer.
 * - A reconnecting client asks `chat:history {after_seq: N}` with N the highest *contiguous* seq held (it
 *   has every message from the oldest it holds up to N), not the highest seen: a live message that arrived
 *   after a gap must not hide the gap.
 */

export interface Author {
  id: string;
  display_name: string;
}

export interface ChatMessage {
  id: string;
  room_id: string;
  seq: number;
  author: Author;
  body: string;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
  reactions: Record<string, number>;
  rev: number;
}

export class MessageLog {
  private bySeq = new Map<number, ChatMessage>();
  private seqOf = new Map<string, number>();
  private sorted: ChatMessage[] | null = [];
  private floor: number | null = null;

  /** How many messages are held. */
  get size(): number {
    return this.bySeq.size;
  }

  /** The messages in `seq` order (a fresh array when anything changed since the last call). */
  messages(): ChatMessage[] {
    if (this.sorted === null) this.sorted = [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
    return this.sorted;
  }

  /** The lowest seq held (0 when none): older history is asked for with `before_seq` this. */
  oldestSeq(): number {
    return this.messages()[0]?.seq ?? 0;
  }

  /** The highest seq held (0 when none). */
  newestSeq(): number {
    const all = this.messages();
    return all[all.length - 1]?.seq ?? 0;
  }

  /**
   * Adds messages (from any source, in any order). A seq already held keeps the newer revision of the two.
   * Returns how many seqs were new.
   */
  add(messages: readonly ChatMessage[]): number {
    let fresh = 0;
    for (const message of messages) {
      if (!isMessage(message)) continue;
      const held = this.bySeq.get(message.seq);
      if (held === undefined) fresh += 1;
      else if (held.rev >= message.rev) continue;
      this.put(message);
    }
    return fresh;
  }

  /** A newer revision of a held message (`chat:updated`: an edit or a delete); ignored if not newer. */
  update(message: ChatMessage): boolean {
    if (!isMessage(message)) return false;
    const held = this.bySeq.get(message.seq);
    if (held === undefined || held.rev >= message.rev) return false;
    this.put(message);
    return true;
  }

  /** New reaction counts of a held message (`chat:reactions`); ignored unless `rev` is newer. */
  react(messageId: string, reactions: Record<string, number>, rev: number): boolean {
    const seq = this.seqOf.get(messageId);
    const held = seq === undefined ? undefined : this.bySeq.get(seq);
    if (held === undefined || held.rev >= rev) return false;
    this.put({ ...held, reactions: { ...reactions }, rev });
    return true;
  }

  /** The message with this id, if held. */
  get(messageId: string): ChatMessage | undefined {
    const seq = this.seqOf.get(messageId);
    return seq === undefined ? undefined : this.bySeq.get(seq);
  }

  /**
   * Where the held run starts: every message up to `seq` is "older history" (loaded by scrolling up), not
   * something missed. Set once, at the first join: the seq before its first message, or 0 for an empty room
   * (so a reconnect into a room that was empty asks for everything from seq 1).
   */
  setFloor(seq: number): void {
    this.floor = seq;
  }

  /**
   * The highest seq N such that every message from the start of the run (the floor, else the oldest held) up
   * to N is held: what to send as `after_seq` after a reconnect.
   */
  contiguousSeq(): number {
    const all = this.messages();
    let last = this.floor ?? (all.length > 0 ? (all[0] as ChatMessage).seq - 1 : 0);
    for (const message of all) {
      if (message.seq <= last) continue;
      if (message.seq !== last + 1) break;
      last = message.seq;
    }
    return last;
  }

  /** Whether every message from the oldest held to the newest is held. */
  isContiguous(): boolean {
    return this.contiguousSeq() >= this.newestSeq();
  }

  private put(message: ChatMessage): void {
    this.bySeq.set(message.seq, message);
    this.seqOf.set(message.id, message.seq);
    this.sorted = null;
  }
}

function isMessage(value: unknown): value is ChatMessage {
  const m = value as ChatMessage | null;
  return (
    typeof m === "object" &&
    m !== null &&
    typeof m.id === "string" &&
    Number.isSafeInteger(m.seq) &&
    m.seq > 0 &&
    typeof m.rev === "number"
  );
}
