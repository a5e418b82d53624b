import { get, writable } from "svelte/store";
import { describe, expect, it } from "vitest";

import { ApiError } from "../src/lib/errors";
import type { Ack, ConnectionState } from "../src/lib/live";
import { LiveRoom, lobbyCountdown, publishedKey, type LiveState, type MediaHost, type Signalling } from "../src/lib/liveroom";

const SESSION = "11111111-1111-4111-8111-111111111111";
const ME = { id: "me", display_name: "Me" };
const HOST = { id: "host", display_name: "Hana" };

function state(over: Partial<LiveState> = {}): LiveState {
  return { session_id: SESSION, status: "scheduled", publishers: [], hands: [], speakers: [], viewers: 0, ...over };
}

/** The Socket.IO connection as the live room uses it: answers per event, pushes server events. */
class FakeSignalling implements Signalling {
  readonly state = writable<ConnectionState>("connected");
  sent: [string, unknown][] = [];
  handlers = new Map<string, ((data: never) => void)[]>();
  constructor(private readonly answer: (event: string, data: unknown) => Ack) {}

  async emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T> {
    this.sent.push([event, data]);
    const ack = this.answer(event, data);
    if (!ack.ok) throw new ApiError(0, ack.error?.code ?? "internal", ack.error?.message ?? "");
    return ack as T;
  }
  on<T>(event: string, handler: (data: T) => void): () => void {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), handler as (data: never) => void]);
    return () => {};
  }
  onConnect(): () => void {
    return () => {};
  }
  push(event: string, data: unknown): void {
    for (const h of this.handlers.get(event) ?? []) (h as (d: unknown) => void)(data);
  }
}

const noMedia: MediaHost = {
  getUserMedia: () => Promise.reject(new DOMException("denied", "NotAllowedError")),
  getDisplayMedia: () => Promise.reject(new DOMException("denied", "NotAllowedError")),
  peer: () => {
    throw new Error("no peers in this test");
  },
};

const session = { id: SESSION, room_id: "r", title: "Signals", starts_at: "2030-01-01T10:00:00Z", host: HOST, status: "scheduled" };
const joined = (over: Partial<LiveState> = {}): Ack => ({ ok: true, session, state: state(over), may_run: false, ice_servers: [] });

async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
}

describe("lobbyCountdown", () => {
  const start = Date.parse("2030-01-01T10:00:00Z");
  it("counts down minutes and seconds, hours, days", () => {
    expect(lobbyCountdown("2030-01-01T10:00:00Z", start - 245_000)).toBe("Starts in 4 min 05 s");
    expect(lobbyCountdown("2030-01-01T10:00:00Z", start - 2 * 3600_000 - 60_000)).toBe("Starts in 2 h 01 min 00 s");
    expect(lobbyCountdown("2030-01-01T10:00:00Z", start - 3 * 86400_000)).toBe("Starts in 3 d 0 h 00 min");
  });
  it("says it waits for the host once the time has come", () => {
    expect(lobbyCountdown("2030-01-01T10:00:00Z", start + 5000)).toMatch(/waiting for the host/);
  });
});

describe("publishedKey", () => {
  it("changes when what is published changes, not for hands or viewers", () => {
    const live = state({ status: "live", publishers: [{ user: HOST, tracks: [{ kind: "video", source: "camera", muted: false }] }] });
    expect(publishedKey(state())).toBe("");
    const key = publishedKey(live);
    expect(publishedKey({ ...live, hands: [ME], viewers: 9 })).toBe(key);
    const sharing = { ...live, publishers: [{ user: HOST, tracks: [...live.publishers[0]!.tracks, { kind: "video" as const, source: "screen" as const, muted: false }] }] };
    expect(publishedKey(sharing)).not.toBe(key);
  });
});

describe("LiveRoom", () => {
  it("joins, follows live:state, raises a hand and hears the invitation", async () => {
    const socket = new FakeSignalling((event, data) => {
      if (event === "live:join") return joined();
      if (event === "live:hand") return { ok: true, state: state({ hands: (data as { raised: boolean }).raised ? [ME] : [] }) };
      return { ok: true };
    });
    const room = new LiveRoom(socket, SESSION, ME, noMedia);
    room.start();
    await settle();
    expect(get(room.phase)).toBe("joined");
    expect(get(room.session)?.title).toBe("Signals");
    expect(get(room.mayRun)).toBe(false);
    await room.raiseHand(true);
    expect(socket.sent.at(-1)).toEqual(["live:hand", { session_id: SESSION, raised: true }]);
    expect(get(room.state)?.hands).toEqual([ME]);
    socket.push("live:invited", { session_id: SESSION, by: HOST });
    expect(get(room.invited)).toBe(true);
    expect(get(room.notice)).toMatch(/Hana invited you to speak/);
    socket.push("live:state", state({ session_id: "another", status: "ended" }));
    expect(get(room.phase)).toBe("joined"); // another session's state is not ours
    socket.push("live:state", state({ status: "ended" }));
    expect(get(room.phase)).toBe("ended");
    room.stop();
  });

  it("offers to join again when the session's server is lost (live:ended)", async () => {
    const socket = new FakeSignalling((event) => (event === "live:join" ? joined({ status: "live" }) : { ok: true }));
    const room = new LiveRoom(socket, SESSION, ME, noMedia);
    room.start();
    await settle();
    socket.push("live:ended", { session_id: "another", reason: "server_lost", message: "gone" });
    expect(get(room.phase)).toBe("joined");
    socket.push("live:ended", { session_id: SESSION, reason: "server_lost", message: "the server carrying this live session stopped; join it again to continue" });
    expect(get(room.phase)).toBe("failed");
    expect(get(room.error)).toBe("The live session was interrupted: the server carrying this live session stopped; join it again to continue.");
    await room.join(); // the page's "Try again"
    expect(get(room.phase)).toBe("joined");
    expect(get(room.error)).toBeNull();
    expect(socket.sent.filter(([e]) => e === "live:join")).toHaveLength(2);
    room.stop();
  });

  it("shows a refusal in words, and an ended session as ended", async () => {
    const refused = new FakeSignalling(() => ({ ok: false, error: { code: "not_found", message: "live session not found" } }));
    const room = new LiveRoom(refused, SESSION, ME, noMedia);
    room.start();
    await settle();
    expect(get(room.phase)).toBe("failed");
    expect(get(room.error)).toBe("The live session cannot be joined: live session not found");

    const over = new FakeSignalling(() => ({ ok: false, error: { code: "conflict", message: "the live session is over" } }));
    const ended = new LiveRoom(over, SESSION, ME, noMedia);
    ended.start();
    await settle();
    expect(get(ended.phase)).toBe("ended");
  });

  it("tells the host when the browser refuses the camera, and publishes nothing", async () => {
    const socket = new FakeSignalling((event) => {
      if (event === "live:join") return { ...joined(), may_run: true };
      if (event === "live:start") return { ok: true, state: state({ status: "live" }) };
      return { ok: true };
    });
    const room = new LiveRoom(socket, SESSION, HOST, noMedia);
    room.start();
    await settle();
    await room.goLive();
    expect(get(room.error)).toBe("Going live failed: the browser was not allowed to use the camera, microphone or screen.");
    expect(socket.sent.map(([e]) => e)).toEqual(["live:join", "live:start"]);
    expect(get(room.local)).toBeNull();
    room.stop();
    expect(socket.sent.at(-1)).toEqual(["live:leave", { session_id: SESSION }]);
  });

  it("records and stops recording, and shows what was saved", async () => {
    const live = state({ status: "live", publishers: [{ user: HOST, tracks: [{ kind: "video", source: "camera", muted: false }] }] });
    const saved = { upload_id: "u", session_id: SESSION, course_id: null, duration_s: 4.2, bytes: 123456, reason: "stopped",
      download_url: `/api/v1/live-sessions/${SESSION}/recordings/u` };
    const socket = new FakeSignalling((event, data) => {
      if (event === "live:join") return { ...joined(live), may_run: true };
      if (event === "live:record") {
        const on = (data as { on: boolean }).on;
        return { ok: true, state: { ...live, recording: on }, recording: on ? { upload_id: "u" } : saved };
      }
      return { ok: true };
    });
    const room = new LiveRoom(socket, SESSION, HOST, noMedia);
    room.start();
    await settle();
    await room.record(true);
    expect(socket.sent.at(-1)).toEqual(["live:record", { session_id: SESSION, on: true }]);
    expect(get(room.state)?.recording).toBe(true);
    expect(get(room.recorded)).toBeNull();
    await room.record(false);
    expect(get(room.state)?.recording).toBe(false);
    expect(get(room.recorded)).toEqual(saved);
    // A recording that ends by itself (the publisher went away) is announced to its recorder.
    socket.push("live:recorded", { session_id: SESSION, recording: { ...saved, upload_id: "v", reason: "publisher_gone" }, reason: "publisher_gone" });
    expect(get(room.recorded)?.upload_id).toBe("v");
    expect(get(room.notice)).toMatch(/nobody publishes/);
    room.stop();
  });

  it("gives its viewer slot back when nobody publishes any more", async () => {
    const live = state({ status: "live", publishers: [{ user: HOST, tracks: [{ kind: "video", source: "camera", muted: false }] }] });
    const socket = new FakeSignalling((event) => {
      if (event === "live:join") return joined(live);
      if (event === "live:subscribe") return { ok: true, sdp: "v=0", type: "answer", tracks: [] };
      return { ok: true };
    });
    const closed: string[] = [];
    const peers: MediaHost = {
      ...noMedia,
      peer: () =>
        ({
          iceGatheringState: "complete",
          localDescription: { sdp: "v=0 offer" },
          addTransceiver: () => ({ setCodecPreferences: () => {} }),
          addEventListener: () => {},
          removeEventListener: () => {},
          createOffer: async () => ({ type: "offer", sdp: "v=0 offer" }),
          setLocalDescription: async () => {},
          setRemoteDescription: async () => {},
          close: () => closed.push("viewer"),
        }) as unknown as RTCPeerConnection,
    };
    const room = new LiveRoom(socket, SESSION, ME, peers);
    room.start();
    await settle();
    await settle();
    expect(socket.sent.map(([e]) => e)).toEqual(["live:join", "live:subscribe"]);
    socket.push("live:state", state({ status: "live" })); // the host stopped publishing
    await settle();
    expect(closed).toEqual(["viewer"]);
    expect(socket.sent.at(-1)).toEqual(["live:unsubscribe", { session_id: SESSION }]);
    socket.push("live:state", state({ status: "live", viewers: 0 })); // nothing more to give back
    await settle();
    expect(socket.sent.filter(([e]) => e === "live:unsubscribe")).toHaveLength(1);
    room.stop();
  });
});
