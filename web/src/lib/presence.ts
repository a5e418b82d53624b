/**
 * Who is present in a room, kept right with the server's presence revisions (docs/rooms-and-chat.md,
 * "Presence revisions: keeping the list right"). Pure: `lib/room.ts` feeds it the `room:join` answer and
 * the `room:presence` / `room:presence_batch` events.
 *
 * 1. Until the `room:join` answer arrives, changes and renames are held (an announcement can overtake the
 *    answer whose list was read before it; so can a `room:renamed`, the list being read from presence, which a
 *    rename rewrites just before telling the room).
 * 2. The answer's `members` are the list at revision `presence_rev`; then the held changes are applied.
 * 3. A change of user U at revision `rev` is applied only if `rev > presence_rev` and `rev` is greater than
 *    the last revision applied for U; otherwise it is already reflected, or something newer about U is.
 * A second `room:join` (a reconnect) starts over from its answer.
 */

export interface PresentUser {
  id: string;
  display_name: string;
}

export type PresenceState = "joined" | "left";

export interface PresenceChange {
  user: PresentUser;
  state: PresenceState;
  rev: number;
}

export class PresenceList {
  private users = new Map<string, PresentUser>();
  private baseRev: number | null = null;
  private lastRev = new Map<string, number>();
  private held: (PresenceChange | { rename: PresentUser })[] = [];

  /** Whether the list is known (a join answer arrived since the last `restart`). */
  get ready(): boolean {
    return this.baseRev !== null;
  }

  /** Forget the list: a (re)join is under way, hold changes until its answer. */
  restart(): void {
    this.users.clear();
    this.lastRev.clear();
    this.baseRev = null;
    this.held = [];
  }

  /** The join answer's list at revision `rev`; applies the changes held meanwhile. */
  reset(members: readonly PresentUser[], rev: number): void {
    this.users = new Map(members.filter(isUser).map((u) => [u.id, { id: u.id, display_name: u.display_name }]));
    this.lastRev.clear();
    this.baseRev = rev;
    const held = this.held;
    this.held = [];
    for (const item of held) {
      if ("rename" in item) this.rename(item.rename);
      else this.apply(item);
    }
  }

  /** One change (a `room:presence`, or one entry of a batch); returns whether the list changed. */
  apply(change: PresenceChange): boolean {
    if (!isUser(change.user) || typeof change.rev !== "number") return false;
    if (this.baseRev === null) {
      this.held.push(change);
      return false;
    }
    const id = change.user.id;
    if (change.rev <= this.baseRev || change.rev <= (this.lastRev.get(id) ?? -Infinity)) return false;
    this.lastRev.set(id, change.rev);
    const had = this.users.has(id);
    if (change.state === "joined") {
      this.users.set(id, { id, display_name: change.user.display_name });
      return !had;
    }
    this.users.delete(id);
    return had;
  }

  /** A `room:presence_batch`: each listed user with their own `rev`. */
  applyBatch(batch: { joined?: (PresentUser & { rev: number })[]; left?: (PresentUser & { rev: number })[] }): boolean {
    let changed = false;
    for (const u of batch.joined ?? []) changed = this.apply({ user: u, state: "joined", rev: u.rev }) || changed;
    for (const u of batch.left ?? []) changed = this.apply({ user: u, state: "left", rev: u.rev }) || changed;
    return changed;
  }

  /** A `room:renamed`: someone present changed their display name; returns whether the list changed.
   * (One not listed is left alone: their next `joined`, or the next join answer, carries the name.) Held,
   * in order with the changes, until the join answer. */
  rename(user: PresentUser): boolean {
    if (!isUser(user)) return false;
    if (this.baseRev === null) {
      this.held.push({ rename: { id: user.id, display_name: user.display_name } });
      return false;
    }
    const known = this.users.get(user.id);
    if (!known || known.display_name === user.display_name) return false;
    this.users.set(user.id, { id: user.id, display_name: user.display_name });
    return true;
  }

  /** The people present, by name. */
  list(): PresentUser[] {
    return [...this.users.values()].sort(
      (a, b) => a.display_name.localeCompare(b.display_name) || a.id.localeCompare(b.id),
    );
  }

  has(userId: string): boolean {
    return this.users.has(userId);
  }
}

function isUser(value: unknown): value is PresentUser {
  const u = value as PresentUser | null;
  return typeof u === "object" && u !== null && typeof u.id === "string" && typeof u.display_name === "string";
}
