/**
 * Rejoining every open room in one round trip after a reconnect: `room:join_many`.
 *
 * At a reconnect every open `RoomSession` asks to join again in the same turn of the event loop (the
 * connection's `onConnect` hooks run one after the other). The `Rejoiner` collects those asks and sends them
 * as one `room:join_many {rooms: [{room_id, after_seq}]}` (several when more rooms are open than the server
 * takes in one: `JOIN_MANY_MAX_ROOMS`). Each room's result carries only the messages after its `after_seq`
 * (the highest *contiguous* seq the session holds), so a reconnect fetches no history twice; `has_more`
 * says more were missed than one answer carries (the session pages with `chat:history`). A room the server
 * refused (kicked meanwhile, archived...) rejects only that room's promise, with the server's error.
 */
import { ApiError } from "./errors";
import type { Ack } from "./live";

/** What this module uses of `LiveConnection`. */
export interface Emitter {
  emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T>;
}

/** One room's result in a `room:join_many` answer (the `room:join` answer's fields, and `has_more`). */
export interface RoomJoinResult {
  room_id: string;
  ok: boolean;
  error?: { code: string; message: string };
  has_more?: boolean;
  [key: string]: unknown;
}

/** What a `RoomSession` uses of a `Rejoiner`. */
export interface RejoinerLike {
  join(roomId: string, afterSeq: number | null): Promise<RoomJoinResult>;
}

/** The server's default `STUDYHALL_ROOM_JOIN_MANY_MAX_ROOMS`. */
export const JOIN_MANY_MAX_ROOMS = 100;

interface Waiting {
  afterSeq: number | null;
  resolve(result: RoomJoinResult): void;
  reject(error: unknown): void;
}

export class Rejoiner implements RejoinerLike {
  private queue = new Map<string, Waiting[]>();
  private scheduled = false;

  constructor(
    private readonly live: Emitter,
    private readonly maxRooms = JOIN_MANY_MAX_ROOMS,
  ) {}

  /**
   * Joins `roomId` with the messages after `afterSeq` (null: the last messages, as `room:join`), together
   * with every other room asked for in the same turn. Resolves the room's result; rejects an `ApiError`
   * when the server refused the room or the whole event.
   */
  join(roomId: string, afterSeq: number | null): Promise<RoomJoinResult> {
    return new Promise((resolve, reject) => {
      const waiting = this.queue.get(roomId) ?? [];
      waiting.push({ afterSeq, resolve, reject });
      this.queue.set(roomId, waiting);
      if (!this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = new Map();
    // A room asked for twice gets one entry: from the lower after_seq (it covers both), or the last messages.
    const rooms = [...queue].map(([room_id, waiting]) => {
      const seqs = waiting.map((w) => w.afterSeq);
      const after_seq = seqs.some((s) => s === null) ? null : Math.min(...(seqs as number[]));
      return { room_id, after_seq };
    });
    for (let i = 0; i < rooms.length; i += this.maxRooms) {
      void this.send(rooms.slice(i, i + this.maxRooms), queue);
    }
  }

  private async send(rooms: { room_id: string; after_seq: number | null }[], queue: Map<string, Waiting[]>) {
    let results: RoomJoinResult[];
    try {
      const ack = await this.live.emit<Ack & { rooms: RoomJoinResult[] }>("room:join_many", { rooms });
      results = Array.isArray(ack.rooms) ? ack.rooms : [];
    } catch (error) {
      for (const { room_id } of rooms) for (const w of queue.get(room_id) ?? []) w.reject(error);
      return;
    }
    const byRoom = new Map(results.filter((r) => r && typeof r.room_id === "string").map((r) => [r.room_id, r]));
    for (const { room_id } of rooms) {
      const result = byRoom.get(room_id);
      for (const w of queue.get(room_id) ?? []) {
        if (result === undefined) w.reject(new ApiError(0, "internal", "The server did not answer for this room."));
        else if (result.ok === true) w.resolve(result);
        else w.reject(new ApiError(0, result.error?.code ?? "internal", result.error?.message ?? "Could not join."));
      }
    }
  }
}
