/**
 * One room as the room screen sees it: joined over the app's Socket.IO connection, its chat in `seq` order,
 * the people present, who is typing, and the messages the user sent that the server has not confirmed yet.
 * The screen renders these stores and calls the methods; all the rules live here (and in the pure
 * `chatlog.ts` / `presence.ts`), so vitest covers them without a browser.
 *
 * **Reconnecting.** `LiveConnection` reconnects by itself (jittered backoff) and calls
 * `onConnect(reconnect: true)`; the session then joins again, through the shared `Rejoiner` when it has one:
 * every open room in one `room:join_many`, each with the highest *contiguous* seq it holds as `after_seq`,
 * so the answer carries only what was missed (without one: `room:join` and its last messages). The answer
 * starts the people list over (rule 2 of presence.ts); if it says `has_more`, or leaves a gap, the session
 * asks `chat:history {after_seq}` from the highest contiguous seq, page after page, until it holds
 * everything. Meanwhile `status` is `catching-up` (the screen's "Reconnecting…" banner); then `live` again.
 *
 * **Nothing typed is lost.** `send` puts the message in the outbox with a `client_msg_id` first. It is
 * sent at once when the room is live, else when it is live again; a send that timed out or could not reach
 * the server is sent again with the same `client_msg_id` (the server answers a resend with the first
 * message, so nothing is posted twice). Outgoing messages go one at a time, in the order they were written.
 * One the server refused (muted, rate limited, too long) stays in the outbox, marked `failed` with the
 * server's message, until the user retries or discards it.
 */
import { get, writable, type Readable } from "svelte/store";

import { ApiError, messageOf } from "./errors";
import type { Ack, ConnectionState } from "./live";
import { MessageLog, type Author, type ChatMessage } from "./chatlog";
import { PresenceList, type PresenceChange, type PresentUser } from "./presence";
import type { RejoinerLike } from "./rejoin";

/** What this module uses of `LiveConnection` (tests pass a stand-in). */
export interface LiveLike {
  readonly state: Readable<ConnectionState>;
  emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T>;
  on<T>(event: string, handler: (data: T) => void): () => void;
  onConnect(hook: (reconnect: boolean) => void): () => void;
}

export interface RoomInfo {
  id: string;
  name: string;
  kind: string;
  visibility: string;
  member_count: number;
  my_role: "host" | "moderator" | "member" | null;
  archived_at: string | null;
}

/**
 * `joining` (first join under way), `live`, `catching-up` (re-joined after a drop, fetching what was
 * missed), `offline` (the connection is down), `removed` (kicked, banned, access lost), `failed` (the join
 * was refused; `error` says why).
 */
export type RoomStatus = "joining" | "live" | "catching-up" | "offline" | "removed" | "failed";

export interface Outgoing {
  client_msg_id: string;
  body: string;
  state: "sending" | "queued" | "failed";
  error?: string;
}

interface JoinAck extends Ack {
  room: RoomInfo;
  members: PresentUser[];
  member_count: number;
  presence_rev: number;
  messages: ChatMessage[];
}

interface HistoryAck extends Ack {
  messages: ChatMessage[];
  has_more: boolean;
}

interface ReactAck extends Ack {
  reactions: Record<string, number>;
  rev: number;
}

interface Moderation {
  room_id: string;
  action: string;
  user_id: string | null;
  by: Author;
  seconds?: number;
  muted_until?: string | null;
}

export const HISTORY_PAGE = 50;
const CATCH_UP_PAGE = 200;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOWN_MS = 6000;

/** Codes a whole `room:join_many` is refused with (too many rooms, too often): the room is joined alone. */
const BATCH_REFUSED = ["invalid_input", "rate_limited"];

/** Errors that mean "not now" (resend later) rather than "no". */
function transient(error: unknown): boolean {
  return error instanceof ApiError && ["unavailable", "timeout", "network"].includes(error.code);
}

export interface RoomOptions {
  newId?: () => string;
  now?: () => number;
  /** Rejoins after a reconnect go through it (one `room:join_many` for all open rooms). */
  rejoiner?: RejoinerLike;
}

export class RoomSession {
  private readonly log = new MessageLog();
  private readonly presence = new PresenceList();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly newId: () => string;
  private readonly now: () => number;
  private readonly rejoiner: RejoinerLike | null;
  private joinAttempt = 0;
  private joinedOnce = false;
  private stopped = false;
  private flushing: Promise<void> | null = null;
  private loadingOlder = false;
  private typingSentAt = -Infinity;
  private typingOn = false;
  private typingIdle: ReturnType<typeof setTimeout> | null = null;
  private typingUntil = new Map<string, { user: Author; until: number }>();
  private typingTimer: ReturnType<typeof setInterval> | null = null;
  private myReactions = new Set<string>();
  private readonly myReactionsStore = writable<ReadonlySet<string>>(new Set());

  private readonly messagesStore = writable<ChatMessage[]>([]);
  private readonly peopleStore = writable<PresentUser[]>([]);
  private readonly outboxStore = writable<Outgoing[]>([]);
  private readonly typingStore = writable<Author[]>([]);
  private readonly statusStore = writable<RoomStatus>("joining");
  private readonly roomStore = writable<RoomInfo | null>(null);
  private readonly errorStore = writable<string | null>(null);
  private readonly noticeStore = writable<string | null>(null);
  private readonly hasOlderStore = writable(false);
  private readonly slowModeStore = writable(0);

  readonly messages: Readable<ChatMessage[]> = this.messagesStore;
  readonly people: Readable<PresentUser[]> = this.peopleStore;
  readonly outbox: Readable<Outgoing[]> = this.outboxStore;
  readonly typing: Readable<Author[]> = this.typingStore;
  readonly status: Readable<RoomStatus> = this.statusStore;
  readonly room: Readable<RoomInfo | null> = this.roomStore;
  /** Why the room cannot be shown or was left (join refused, kicked, banned). */
  readonly error: Readable<string | null> = this.errorStore;
  /** The latest thing the room should tell this user (muted, slow mode, archived). */
  readonly notice: Readable<string | null> = this.noticeStore;
  /** Whether older messages than the oldest held exist (`loadOlder`). */
  readonly hasOlder: Readable<boolean> = this.hasOlderStore;
  /** This user's reactions as far as this tab knows, as `"<message id> <emoji>"` (see `reacted`). */
  readonly myReactionsKeys: Readable<ReadonlySet<string>> = this.myReactionsStore;
  /** Seconds between a member's messages (0: off), as last announced. */
  readonly slowMode: Readable<number> = this.slowModeStore;

  constructor(
    private readonly live: LiveLike,
    readonly roomId: string,
    readonly me: Author,
    options: RoomOptions = {},
  ) {
    this.newId = options.newId ?? (() => crypto.randomUUID());
    this.now = options.now ?? (() => Date.now());
    this.rejoiner = options.rejoiner ?? null;
  }

  /** Starts following the room: joins now if connected, and again at every reconnect. */
  start(): void {
    const mine = <T extends { room_id?: string }>(handler: (data: T) => void) => (data: T) => {
      if (!this.stopped && data?.room_id === this.roomId) handler(data);
    };
    this.unsubscribe.push(
      this.live.on<ChatMessage>("chat:message", mine((m) => this.received([m]))),
      // `chat:updated` is `{message}`: the room is the message's.
      this.live.on<{ message: ChatMessage }>("chat:updated", (e) => {
        if (!this.stopped && e?.message?.room_id === this.roomId && this.log.update(e.message)) this.publishMessages();
      }),
      this.live.on<{ room_id: string; message_id: string; reactions: Record<string, number>; rev: number }>(
        "chat:reactions",
        mine((e) => this.log.react(e.message_id, e.reactions, e.rev) && this.publishMessages()),
      ),
      this.live.on<{ room_id: string } & PresenceChange>(
        "room:presence",
        mine((e) => this.presence.apply(e) && this.publishPeople()),
      ),
      this.live.on<{ room_id: string } & Parameters<PresenceList["applyBatch"]>[0]>(
        "room:presence_batch",
        mine((e) => this.presence.applyBatch(e) && this.publishPeople()),
      ),
      // Someone present renamed themself (PATCH /me): the people list and the @mention suggestions follow;
      // messages already shown keep the name they were sent with until read again.
      this.live.on<{ room_id: string; user: PresentUser }>(
        "room:renamed",
        mine((e) => this.presence.rename(e.user) && this.publishPeople()),
      ),
      this.live.on<{ room_id: string; user: Author; typing: boolean }>(
        "chat:typing",
        mine((e) => this.someoneTyping(e.user, e.typing)),
      ),
      this.live.on<Moderation>("chat:moderation", mine((e) => this.moderated(e))),
      this.live.on<{ room_id: string; reason: string }>(
        "room:kicked",
        mine((e) =>
          this.removed(e.reason === "ban" ? "You were banned from this room." : "You were removed from this room."),
        ),
      ),
      this.live.on<{ room_id: string; message: string }>(
        "room:removed",
        mine((e) => this.removed(`You are no longer in this room: ${e.message}`)),
      ),
      this.live.on<{ room_id: string }>(
        "room:archived",
        mine(() => this.noticeStore.set("This room was archived: it can be read but no longer written to.")),
      ),
      this.live.onConnect((reconnect) => void this.join(reconnect)),
      this.live.state.subscribe((state) => {
        if (this.stopped || state === "connected") return;
        const status = get(this.statusStore);
        if (status === "live" || status === "catching-up" || status === "joining") {
          this.statusStore.set(this.joinedOnce ? "offline" : "joining");
        }
      }),
    );
    if (get(this.live.state) === "connected") void this.join(false);
  }

  /** Stops following the room (the screen closed): leaves it on the server, forgets the subscriptions. */
  stop(): void {
    if (this.stopped) return;
    this.setTyping(false);
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off();
    if (this.typingTimer !== null) clearInterval(this.typingTimer);
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.live.emit("room:leave", { room_id: this.roomId }).catch(() => {});
  }

  /** Joins (again): the people list starts over, missed messages are fetched, then the outbox is sent. */
  async join(reconnect = false): Promise<void> {
    const status = get(this.statusStore);
    if (this.stopped || status === "removed") return;
    const attempt = ++this.joinAttempt;
    this.statusStore.set(this.joinedOnce || reconnect ? "catching-up" : "joining");
    this.presence.restart();
    let ack: JoinAck;
    let more = false;
    try {
      if (reconnect && this.joinedOnce && this.rejoiner !== null) {
        // Only what was missed: the messages after the highest contiguous seq held.
        const result = await this.rejoinOrJoin(this.rejoiner);
        ack = result as unknown as JoinAck;
        more = result.has_more === true;
      } else {
        ack = await this.live.emit<JoinAck>("room:join", { room_id: this.roomId });
      }
    } catch (error) {
      if (attempt !== this.joinAttempt || this.stopped) return;
      if (transient(error)) {
        this.statusStore.set(this.joinedOnce ? "offline" : "joining"); // the next connect tries again
        return;
      }
      this.errorStore.set(messageOf(error));
      this.statusStore.set("failed");
      return;
    }
    if (attempt !== this.joinAttempt || this.stopped) return;
    this.roomStore.set(ack.room);
    this.errorStore.set(null);
    this.presence.reset(ack.members ?? [], ack.presence_rev ?? 0);
    this.publishPeople();
    const messages = Array.isArray(ack.messages) ? ack.messages : [];
    if (!this.joinedOnce) {
      // Everything before the first join's history counts as "older", reached by scrolling up.
      this.log.setFloor(messages.length > 0 ? (messages[0] as ChatMessage).seq - 1 : 0);
    }
    this.joinedOnce = true;
    this.received(messages);
    try {
      await this.catchUp(attempt, more);
    } catch (error) {
      if (attempt !== this.joinAttempt || this.stopped) return;
      if (!transient(error)) this.noticeStore.set(`Some missed messages could not be loaded: ${messageOf(error)}`);
      if (transient(error)) return; // still catching up: the next connect resumes from the same seq
    }
    if (attempt !== this.joinAttempt || this.stopped) return;
    this.statusStore.set("live");
    void this.flush();
  }

  /**
   * Rejoins through the shared `Rejoiner`; if the server refused the whole `room:join_many` (a server with a
   * lower limit on rooms per batch, or past its rate), joins this room alone with `room:join` instead (its last
   * messages; a gap is then fetched by `catchUp`).
   */
  private async rejoinOrJoin(rejoiner: RejoinerLike): Promise<JoinAck & { has_more?: boolean }> {
    try {
      return (await rejoiner.join(this.roomId, this.log.contiguousSeq())) as unknown as JoinAck;
    } catch (error) {
      if (!(error instanceof ApiError) || !BATCH_REFUSED.includes(error.code)) throw error;
      return await this.live.emit<JoinAck>("room:join", { room_id: this.roomId });
    }
  }

  /**
   * Fetches what a gap in the held messages is missing, from the highest contiguous seq on; with `more` (the
   * join answer said more were missed than it carried) also when no gap shows yet, until a page says no more.
   */
  private async catchUp(attempt: number, more = false): Promise<void> {
    while ((more || !this.log.isContiguous()) && attempt === this.joinAttempt && !this.stopped) {
      const after = this.log.contiguousSeq();
      const ack = await this.live.emit<HistoryAck>("chat:history", {
        room_id: this.roomId,
        after_seq: after,
        limit: CATCH_UP_PAGE,
      });
      this.received(ack.messages ?? []);
      more = more && ack.has_more === true;
      if (this.log.contiguousSeq() === after) break; // nothing more to be had: do not loop
    }
  }

  /** The highest contiguous seq held: what a reconnect sends as `after_seq`. */
  get resumeSeq(): number {
    return this.log.contiguousSeq();
  }

  /** Loads the page of messages before the oldest held (scrolling up). */
  async loadOlder(): Promise<void> {
    const oldest = this.log.oldestSeq();
    if (this.loadingOlder || oldest <= 1 || get(this.statusStore) !== "live") return;
    this.loadingOlder = true;
    try {
      const ack = await this.live.emit<HistoryAck>("chat:history", {
        room_id: this.roomId,
        before_seq: oldest,
        limit: HISTORY_PAGE,
      });
      this.received(ack.messages ?? []);
    } finally {
      this.loadingOlder = false;
    }
  }

  /** Queues a message (sent at once when live); returns its `client_msg_id`, or null for a blank one. */
  send(body: string): string | null {
    if (body.trim() === "") return null;
    const item: Outgoing = { client_msg_id: this.newId(), body, state: "queued" };
    this.outboxStore.update((items) => [...items, item]);
    this.setTyping(false);
    void this.flush();
    return item.client_msg_id;
  }

  /** Sends a failed message again (same `client_msg_id`). */
  retry(clientMsgId: string): void {
    this.patchOutgoing(clientMsgId, { state: "queued", error: undefined });
    void this.flush();
  }

  /** Gives up on an unsent message; returns its text (the screen may put it back in the box). */
  discard(clientMsgId: string): string | null {
    const item = get(this.outboxStore).find((o) => o.client_msg_id === clientMsgId);
    this.outboxStore.update((items) => items.filter((o) => o.client_msg_id !== clientMsgId));
    return item?.body ?? null;
  }

  /** Sends the outbox in order, one at a time, while the room is live. */
  flush(): Promise<void> {
    if (this.flushing === null) {
      this.flushing = this.flushLoop().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  private async flushLoop(): Promise<void> {
    for (;;) {
      if (this.stopped || get(this.statusStore) !== "live") return;
      const next = get(this.outboxStore).find((o) => o.state !== "failed");
      if (next === undefined) return;
      this.patchOutgoing(next.client_msg_id, { state: "sending" });
      try {
        const ack = await this.live.emit<Ack & { message: ChatMessage }>("chat:send", {
          room_id: this.roomId,
          body: next.body,
          client_msg_id: next.client_msg_id,
        });
        this.outboxStore.update((items) => items.filter((o) => o.client_msg_id !== next.client_msg_id));
        this.received([ack.message]);
      } catch (error) {
        if (transient(error)) {
          this.patchOutgoing(next.client_msg_id, { state: "queued" });
          return; // sent again (same id) once the room is live again
        }
        this.patchOutgoing(next.client_msg_id, { state: "failed", error: messageOf(error) });
      }
    }
  }

  async edit(messageId: string, body: string): Promise<void> {
    const ack = await this.live.emit<Ack & { message: ChatMessage }>("chat:edit", {
      room_id: this.roomId,
      message_id: messageId,
      body,
    });
    if (this.log.update(ack.message)) this.publishMessages();
  }

  async remove(messageId: string): Promise<void> {
    const ack = await this.live.emit<Ack & { message: ChatMessage }>("chat:delete", {
      room_id: this.roomId,
      message_id: messageId,
    });
    if (this.log.update(ack.message)) this.publishMessages();
  }

  /**
   * Whether this user's reaction `emoji` is on the message, as far as this tab knows (the server's counts
   * do not say whose they are: a reaction made in another session shows as not this user's, and a press
   * then changes nothing but marks it as theirs, so the next press takes it off).
   */
  reacted(messageId: string, emoji: string): boolean {
    return this.myReactions.has(messageId + " " + emoji);
  }

  /** Toggles this user's `emoji` on a message. */
  async react(messageId: string, emoji: string): Promise<void> {
    const key = messageId + " " + emoji;
    const on = !this.myReactions.has(key);
    this.setMine(key, on); // at once: the room's chat:reactions may arrive before this ack
    let ack: ReactAck;
    try {
      ack = await this.live.emit<ReactAck>("chat:react", { room_id: this.roomId, message_id: messageId, emoji, on });
    } catch (error) {
      this.setMine(key, !on);
      throw error;
    }
    if (this.log.react(messageId, ack.reactions, ack.rev)) this.publishMessages();
  }

  private setMine(key: string, on: boolean): void {
    this.myReactions = new Set(this.myReactions);
    if (on) this.myReactions.add(key);
    else this.myReactions.delete(key);
    this.myReactionsStore.set(this.myReactions);
  }

  /** Tells the room this user is (not) typing, at most every few seconds; stops by itself when idle. */
  setTyping(typing: boolean): void {
    if (this.stopped || get(this.statusStore) !== "live") return;
    if (this.typingIdle !== null) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    const now = this.now();
    if (typing) {
      this.typingIdle = setTimeout(() => this.setTyping(false), TYPING_IDLE_MS);
      if (this.typingOn && now - this.typingSentAt < TYPING_SEND_EVERY_MS) return;
    } else if (!this.typingOn) {
      return;
    }
    this.typingOn = typing;
    this.typingSentAt = now;
    this.live.emit("chat:typing", { room_id: this.roomId, typing }).catch(() => {});
  }

  private readSent = 0;

  /**
   * Tells the server the user has read the room up to `seq` (`chat:read`), once per higher seq; the
   * conversation list's unread counts follow it. Failures are ignored: the next message retries.
   */
  markRead(seq: number): void {
    if (seq <= this.readSent) return;
    const before = this.readSent;
    this.readSent = seq;
    this.live.emit("chat:read", { room_id: this.roomId, seq }).catch(() => {
      if (this.readSent === seq) this.readSent = before;
    });
  }

  async mute(userId: string, seconds: number): Promise<void> {
    await this.live.emit("chat:mute", { room_id: this.roomId, user_id: userId, seconds });
  }

  async kick(userId: string): Promise<void> {
    await this.live.emit("chat:kick", { room_id: this.roomId, user_id: userId });
  }

  async ban(userId: string): Promise<void> {
    await this.live.emit("chat:ban", { room_id: this.roomId, user_id: userId, on: true });
  }

  async setSlowMode(seconds: number): Promise<void> {
    await this.live.emit("chat:slow_mode", { room_id: this.roomId, seconds });
    this.slowModeStore.set(seconds);
  }

  /** Whether this user moderates the room (host or moderator). */
  get moderates(): boolean {
    const role = get(this.roomStore)?.my_role;
    return role === "host" || role === "moderator";
  }

  // --- incoming --------------------------------------------------------------------------------------

  private received(messages: ChatMessage[]): void {
    let changed = false;
    for (const message of messages) {
      if (!message) continue;
      changed = this.log.add([message]) > 0 || changed;
      if (message.author && this.typingUntil.delete(message.author.id)) this.publishTyping();
    }
    if (changed || messages.length > 0) this.publishMessages();
  }

  private someoneTyping(user: Author, typing: boolean): void {
    if (!user || user.id === this.me.id) return;
    if (typing) this.typingUntil.set(user.id, { user, until: this.now() + TYPING_SHOWN_MS });
    else this.typingUntil.delete(user.id);
    if (this.typingUntil.size > 0 && this.typingTimer === null) {
      this.typingTimer = setInterval(() => this.expireTyping(), 1000);
    }
    this.publishTyping();
  }

  private expireTyping(): void {
    const now = this.now();
    for (const [id, entry] of this.typingUntil) if (entry.until <= now) this.typingUntil.delete(id);
    if (this.typingUntil.size === 0 && this.typingTimer !== null) {
      clearInterval(this.typingTimer);
      this.typingTimer = null;
    }
    this.publishTyping();
  }

  private moderated(event: Moderation): void {
    const by = event.by?.display_name ?? "A moderator";
    if (event.action === "slow_mode") {
      const seconds = event.seconds ?? 0;
      this.slowModeStore.set(seconds);
      this.noticeStore.set(
        seconds > 0 ? `${by} turned on slow mode: one message every ${seconds} s.` : `${by} turned slow mode off.`,
      );
      return;
    }
    if (event.user_id !== this.me.id) return;
    if (event.action === "mute") {
      const until = event.muted_until ? new Date(event.muted_until).toLocaleTimeString() : "further notice";
      this.noticeStore.set(`${by} muted you until ${until}. Your messages will be refused until then.`);
    } else if (event.action === "unmute") {
      this.noticeStore.set(`${by} lifted your mute.`);
    }
  }

  private removed(message: string): void {
    this.joinAttempt++;
    this.errorStore.set(message);
    this.statusStore.set("removed");
    this.presence.restart();
    this.publishPeople();
  }

  // --- publishing ------------------------------------------------------------------------------------

  private publishMessages(): void {
    this.messagesStore.set(this.log.messages());
    this.hasOlderStore.set(this.log.oldestSeq() > 1);
  }

  private publishPeople(): void {
    this.peopleStore.set(this.presence.list());
  }

  private publishTyping(): void {
    this.typingStore.set([...this.typingUntil.values()].map((entry) => entry.user));
  }

  private patchOutgoing(clientMsgId: string, patch: Partial<Outgoing>): void {
    this.outboxStore.update((items) =>
      items.map((o) => (o.client_msg_id === clientMsgId ? { ...o, ...patch } : o)),
    );
  }
}
