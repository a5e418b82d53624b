/**
 * A live session's client layer (docs/web.md, "The live room"; the server side is docs/live.md): joins the
 * session over the `live:*` Socket.IO events, keeps its state in stores, and runs the WebRTC peers.
 *
 * Non-trickle, as the server wants: each peer gathers its ICE candidates before its offer is sent, and the
 * ack carries the server's complete answer. One peer publishes (camera and microphone, then the screen as a
 * second video section: publishing again replaces the previous peer on the server); one peer receives
 * (subscribed again whenever `live:state` shows that what is published changed). The ICE servers are the
 * ones the `live:join` answer names (none: host candidates only).
 */
import { get, writable, type Readable } from "svelte/store";

import { ApiError, messageOf } from "./errors";
import type { Ack, ConnectionState } from "./live";

export interface LiveUser {
  id: string;
  display_name: string;
}

export interface LiveSessionInfo {
  id: string;
  room_id: string;
  course_id: string | null;
  title: string;
  starts_at: string;
  duration_minutes: number;
  ends_at: string;
  host: LiveUser;
  status: "scheduled" | "live" | "ended" | "cancelled";
  went_live_at: string | null;
  ended_at: string | null;
  cancelled_at: string | null;
}

export interface LiveTrackInfo {
  kind: "audio" | "video";
  source: "camera" | "screen" | "microphone";
  muted: boolean;
}

export interface LiveState {
  session_id: string;
  status: string;
  publishers: { user: LiveUser; tracks: LiveTrackInfo[] }[];
  hands: LiveUser[];
  speakers: string[];
  viewers: number;
  /** Being recorded (`live:record`). */
  recording?: boolean;
}

/** A finished recording (`live:record` off, or `live:recorded`): a WebM file its recorder downloads. */
export interface LiveRecording {
  upload_id: string;
  session_id: string;
  course_id: string | null;
  duration_s: number;
  bytes: number;
  download_url: string;
  reason: string;
}

/** A received stream on screen: one per publisher's camera or screen (their microphone rides with the camera). */
export interface RemoteFeed {
  key: string;
  user: LiveUser;
  source: "camera" | "screen" | "microphone";
  stream: MediaStream;
}

/** What this module uses of the Socket.IO connection (lib/live.ts's `LiveConnection`; tests pass a stand-in). */
export interface Signalling {
  readonly state: Readable<ConnectionState>;
  emit<T extends Ack = Ack>(event: string, data: unknown): Promise<T>;
  on<T>(event: string, handler: (data: T) => void): () => void;
  onConnect(hook: (reconnect: boolean) => void): () => void;
}

/** The browser's media and peers (tests pass stand-ins). */
export interface MediaHost {
  getUserMedia(constraints: MediaStreamConstraints): Promise<MediaStream>;
  getDisplayMedia(constraints: DisplayMediaStreamOptions): Promise<MediaStream>;
  peer(config: RTCConfiguration): RTCPeerConnection;
}

export const browserMedia: MediaHost = {
  getUserMedia: (c) => navigator.mediaDevices.getUserMedia(c),
  getDisplayMedia: (c) => navigator.mediaDevices.getDisplayMedia(c),
  peer: (config) => new RTCPeerConnection(config),
};

export type LivePhase = "joining" | "joined" | "ended" | "failed";

interface JoinAck extends Ack {
  session: LiveSessionInfo;
  state: LiveState;
  may_run: boolean;
  ice_servers: RTCIceServer[];
}

interface AnswerAck extends Ack {
  sdp: string;
  tracks?: { mid: string; kind: string; source: RemoteFeed["source"]; user: LiveUser }[];
}

const GATHER_TIMEOUT_MS = 5000;

/** Waits until the peer has gathered its ICE candidates (or a few seconds: what it has then is sent). */
export function gathered(pc: RTCPeerConnection, timeoutMs = GATHER_TIMEOUT_MS): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done(): void {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check(): void {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** The codecs the server forwards (VP8 with RTX, Opus: live/sfu.py). Offering only these keeps a browser's
 * offer small: Chrome lists some twenty video codecs per section, and five sections passed the server's
 * `STUDYHALL_LIVE_MAX_SDP_BYTES` (16 KB by default). */
const FORWARDED_CODECS: Record<string, string[]> = { video: ["video/vp8", "video/rtx"], audio: ["audio/opus"] };

/** Restricts a transceiver to the forwarded codecs (a browser without `setCodecPreferences` offers all). */
export function preferForwardedCodecs(transceiver: RTCRtpTransceiver, kind: string): void {
  const wanted = FORWARDED_CODECS[kind] ?? [];
  try {
    const codecs = (RTCRtpReceiver.getCapabilities(kind)?.codecs ?? []).filter((c) => wanted.includes(c.mimeType.toLowerCase()));
    if (codecs.length > 0) transceiver.setCodecPreferences(codecs);
  } catch {
    // not supported here: the server picks VP8/Opus from the full list
  }
}

/** What is published, as a key: a change means the viewer subscribes again. Own tracks count too (the
 * server offers every track in order, the subscriber's own included). */
export function publishedKey(state: LiveState | null): string {
  if (!state || state.status !== "live") return "";
  return state.publishers.map((p) => `${p.user.id}:${p.tracks.map((t) => t.source).join(",")}`).join(";");
}

/** "Starts in 4 min 05 s" until `startsAt`; past it, waiting for the host. */
export function lobbyCountdown(startsAt: string, now: number): string {
  const left = Math.round((Date.parse(startsAt) - now) / 1000);
  if (!Number.isFinite(left)) return "";
  if (left <= 0) return "Starting any moment: waiting for the host to go live.";
  const d = Math.floor(left / 86400);
  const h = Math.floor((left % 86400) / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = left % 60;
  const pad = (n: number): string => String(n).padStart(2, "0");
  if (d > 0) return `Starts in ${d} d ${h} h ${pad(m)} min`;
  if (h > 0) return `Starts in ${h} h ${pad(m)} min ${pad(s)} s`;
  return `Starts in ${m} min ${pad(s)} s`;
}

/** A refusal in words a person acts on (the server's own message, with what it means here). */
export function refusal(what: string, error: unknown): string {
  const message = messageOf(error);
  if (error instanceof ApiError) {
    if (error.code === "unavailable") return `${what}: ${message}`;
    if (error.code === "rate_limited") return `${what}: ${message}`;
    if (error.code === "forbidden") return `${what}: ${message}`;
    if (error.code === "conflict") return `${what}: ${message}`;
  }
  if (error instanceof DOMException && error.name === "NotAllowedError") {
    return `${what}: the browser was not allowed to use the camera, microphone or screen.`;
  }
  if (error instanceof DOMException && error.name === "NotFoundError") {
    return `${what}: no camera or microphone was found.`;
  }
  return `${what}: ${message}`;
}

export class LiveRoom {
  private readonly sessionStore = writable<LiveSessionInfo | null>(null);
  private readonly stateStore = writable<LiveState | null>(null);
  private readonly phaseStore = writable<LivePhase>("joining");
  private readonly mayRunStore = writable(false);
  private readonly errorStore = writable<string | null>(null);
  private readonly noticeStore = writable<string | null>(null);
  private readonly localStore = writable<MediaStream | null>(null);
  private readonly screenStore = writable<MediaStream | null>(null);
  private readonly feedsStore = writable<RemoteFeed[]>([]);
  private readonly invitedStore = writable(false);
  private readonly busyStore = writable(false);
  private readonly recordingStore = writable<LiveRecording | null>(null);
  private iceServers: RTCIceServer[] = [];
  private publishPc: RTCPeerConnection | null = null;
  private viewPc: RTCPeerConnection | null = null;
  private viewKey = "";
  private subscribing: Promise<void> | null = null;
  private resubscribe = false;
  private unsubscribers: (() => void)[] = [];
  private stopped = false;

  constructor(
    private readonly socket: Signalling,
    readonly sessionId: string,
    private readonly me: LiveUser,
    private readonly media: MediaHost = browserMedia,
  ) {}

  get session(): Readable<LiveSessionInfo | null> {
    return this.sessionStore;
  }
  get state(): Readable<LiveState | null> {
    return this.stateStore;
  }
  get phase(): Readable<LivePhase> {
    return this.phaseStore;
  }
  /** Whether this user runs the session (host, room moderators, the course's instructor, admins). */
  get mayRun(): Readable<boolean> {
    return this.mayRunStore;
  }
  get error(): Readable<string | null> {
    return this.errorStore;
  }
  get notice(): Readable<string | null> {
    return this.noticeStore;
  }
  /** This user's camera and microphone while publishing (the preview). */
  get local(): Readable<MediaStream | null> {
    return this.localStore;
  }
  get screen(): Readable<MediaStream | null> {
    return this.screenStore;
  }
  /** What this user receives from the others. */
  get feeds(): Readable<RemoteFeed[]> {
    return this.feedsStore;
  }
  /** Invited to speak (`live:invited`, or listed among the speakers). */
  get invited(): Readable<boolean> {
    return this.invitedStore;
  }
  get busy(): Readable<boolean> {
    return this.busyStore;
  }
  /** The last recording this user made here (to download). */
  get recorded(): Readable<LiveRecording | null> {
    return this.recordingStore;
  }

  start(): void {
    this.stopped = false;
    this.unsubscribers.push(
      this.socket.on<LiveState>("live:state", (s) => {
        if (s.session_id === this.sessionId) this.applyState(s);
      }),
      this.socket.on<{ session_id: string; by: LiveUser }>("live:invited", (e) => {
        if (e.session_id !== this.sessionId) return;
        this.invitedStore.set(true);
        this.noticeStore.set(`${e.by.display_name} invited you to speak: press "Start speaking" to turn on your camera and microphone.`);
      }),
      this.socket.on<{ session_id: string; reason: string; message: string }>("live:ended", (e) => {
        // The server carrying the session went away (several nodes): peers are gone; joining again restarts it.
        if (e.session_id !== this.sessionId) return;
        this.closePublishing();
        this.closeViewing();
        this.phaseStore.set("failed");
        this.errorStore.set(`The live session was interrupted: ${e.message || "its server stopped"}.`);
      }),
      this.socket.on<{ session_id: string; recording: LiveRecording | null; reason: string }>("live:recorded", (e) => {
        if (e.session_id !== this.sessionId) return;
        this.recordingStore.set(e.recording);
        if (e.recording === null) this.noticeStore.set("The recording ended before anything was recorded.");
        else if (e.reason === "publisher_gone") this.noticeStore.set("The recording stopped: nobody publishes any more. It was saved.");
        else if (e.reason !== "stopped") this.noticeStore.set("The recording reached its limit and was saved.");
      }),
      this.socket.onConnect((reconnect) => {
        if (reconnect) void this.rejoin();
      }),
    );
    if (get(this.socket.state) === "connected") void this.join();
    else {
      // The first connect runs the hook above with reconnect=false: join then.
      const off = this.socket.onConnect(() => {
        off();
        void this.join();
      });
      this.unsubscribers.push(off);
    }
  }

  /** Leaves: peers closed, devices released, `live:leave` sent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const off of this.unsubscribers) off();
    this.unsubscribers = [];
    this.closePublishing();
    this.closeViewing();
    if (get(this.phaseStore) === "joined") void this.socket.emit("live:leave", { session_id: this.sessionId }).catch(() => {});
  }

  async join(): Promise<void> {
    this.phaseStore.set("joining");
    try {
      const ack = await this.socket.emit<JoinAck>("live:join", { session_id: this.sessionId });
      this.iceServers = Array.isArray(ack.ice_servers) ? ack.ice_servers : [];
      this.sessionStore.set(ack.session);
      this.mayRunStore.set(ack.may_run === true);
      this.errorStore.set(null); // a refusal or an interruption is over
      this.phaseStore.set("joined");
      this.applyState(ack.state);
    } catch (e) {
      if (e instanceof ApiError && e.code === "conflict") {
        this.phaseStore.set("ended");
        this.errorStore.set(messageOf(e));
      } else {
        this.phaseStore.set("failed");
        this.errorStore.set(refusal("The live session cannot be joined", e));
      }
    }
  }

  private async rejoin(): Promise<void> {
    // The server dropped this connection's peers with the old connection: join, then publish again.
    const wasPublishing = this.publishPc !== null;
    this.closeViewing();
    if (this.publishPc) {
      this.publishPc.close();
      this.publishPc = null;
    }
    await this.join();
    if (wasPublishing && get(this.phaseStore) === "joined") await this.run("Publishing again failed", () => this.publish());
  }

  /** Host: the session goes live (if it is not yet), and the camera and microphone are published. */
  goLive(): Promise<void> {
    return this.run("Going live failed", async () => {
      if (get(this.stateStore)?.status !== "live") {
        const ack = await this.socket.emit<Ack & { state: LiveState }>("live:start", { session_id: this.sessionId });
        this.applyState(ack.state);
      }
      await this.startCamera();
    });
  }

  /** An invited speaker (or the host again): camera and microphone on. */
  startSpeaking(): Promise<void> {
    return this.run("Speaking failed", () => this.startCamera());
  }

  private async startCamera(): Promise<void> {
    if (!get(this.localStore)) {
      this.localStore.set(await this.media.getUserMedia({ video: { width: 640, height: 360 }, audio: true }));
    }
    await this.publish();
  }

  /** The screen as a second published video (the camera and microphone carry on). */
  shareScreen(): Promise<void> {
    return this.run("Sharing the screen failed", async () => {
      const screen = await this.media.getDisplayMedia({ video: true, audio: false });
      this.screenStore.set(screen);
      // The browser's own "Stop sharing" ends the track: publish without the screen then.
      screen.getVideoTracks()[0]?.addEventListener("ended", () => void this.stopSharing());
      await this.publish();
    });
  }

  stopSharing(): Promise<void> {
    const screen = get(this.screenStore);
    if (!screen) return Promise.resolve();
    for (const t of screen.getTracks()) t.stop();
    this.screenStore.set(null);
    return this.run("Stopping the screen share failed", () => this.publish());
  }

  /** Host: ends the session for everyone. */
  end(): Promise<void> {
    return this.run("Stopping the session failed", async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState }>("live:stop", { session_id: this.sessionId });
      this.applyState(ack.state);
    });
  }

  /** A speaker stops publishing (camera, microphone and screen off). */
  stopSpeaking(): Promise<void> {
    return this.run("Stopping failed", async () => {
      await this.socket.emit("live:stop", { session_id: this.sessionId, user_id: this.me.id });
      this.closePublishing();
    });
  }

  raiseHand(raised: boolean): Promise<void> {
    return this.run(raised ? "Raising your hand failed" : "Lowering your hand failed", async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState }>("live:hand", { session_id: this.sessionId, raised });
      this.applyState(ack.state);
    });
  }

  invite(user: LiveUser): Promise<void> {
    return this.run(`Inviting ${user.display_name} failed`, async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState }>("live:invite", { session_id: this.sessionId, user_id: user.id });
      this.applyState(ack.state);
    });
  }

  /** Host: stop forwarding a speaker's tracks (until they publish again). */
  mute(user: LiveUser): Promise<void> {
    return this.run(`Muting ${user.display_name} failed`, async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState }>("live:mute", { session_id: this.sessionId, user_id: user.id, kind: "all" });
      this.applyState(ack.state);
    });
  }

  /** Host: end a speaker's publishing (and their invitation). */
  stopSpeaker(user: LiveUser): Promise<void> {
    return this.run(`Stopping ${user.display_name} failed`, async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState }>("live:stop", { session_id: this.sessionId, user_id: user.id });
      this.applyState(ack.state);
    });
  }

  /** Starts or stops recording the session (hosts): the published picture and sound, as they are sent. */
  record(on: boolean): Promise<void> {
    return this.run(on ? "Recording failed" : "Stopping the recording failed", async () => {
      const ack = await this.socket.emit<Ack & { state: LiveState; recording: LiveRecording | { upload_id: string } | null }>("live:record", {
        session_id: this.sessionId,
        on,
      });
      this.applyState(ack.state);
      if (!on) this.recordingStore.set(ack.recording && "download_url" in ack.recording ? ack.recording : null);
    });
  }

  /** Runs an action: one at a time, its refusal shown (and the previous one cleared). */
  private async run(what: string, action: () => Promise<void>): Promise<void> {
    this.busyStore.set(true);
    this.errorStore.set(null);
    try {
      await action();
    } catch (e) {
      this.errorStore.set(refusal(what, e));
    } finally {
      this.busyStore.set(false);
    }
  }

  private async publish(): Promise<void> {
    const camera = get(this.localStore);
    const screen = get(this.screenStore);
    const pc = this.media.peer({ iceServers: this.iceServers });
    // The server reads the sections in order: audio, then camera, then screen (live/signalling.py).
    const audio = camera?.getAudioTracks()[0];
    const video = camera?.getVideoTracks()[0];
    const shared = screen?.getVideoTracks()[0];
    if (camera && audio) preferForwardedCodecs(pc.addTransceiver(audio, { direction: "sendonly", streams: [camera] }), "audio");
    if (camera && video) preferForwardedCodecs(pc.addTransceiver(video, { direction: "sendonly", streams: [camera] }), "video");
    if (screen && shared) preferForwardedCodecs(pc.addTransceiver(shared, { direction: "sendonly", streams: [screen] }), "video");
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const ack = await this.socket.emit<AnswerAck & { state: LiveState }>("live:publish", {
        session_id: this.sessionId,
        sdp: pc.localDescription?.sdp ?? "",
      });
      await pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
      this.publishPc?.close();
      this.publishPc = pc;
      this.applyState(ack.state);
    } catch (e) {
      pc.close();
      throw e;
    }
  }

  private closePublishing(): void {
    this.publishPc?.close();
    this.publishPc = null;
    for (const store of [this.localStore, this.screenStore]) {
      for (const t of get(store)?.getTracks() ?? []) t.stop();
      store.set(null);
    }
  }

  /** Nothing left to watch: the receiving peer closes and the server is told, so that its slot goes to another
   * viewer (`live:unsubscribe`; on leaving, `live:leave` frees it anyway). */
  private stopWatching(): void {
    const had = this.viewPc !== null;
    this.closeViewing();
    if (had) void this.socket.emit("live:unsubscribe", { session_id: this.sessionId }).catch(() => {});
  }

  private closeViewing(): void {
    this.viewPc?.close();
    this.viewPc = null;
    this.viewKey = "";
    this.feedsStore.set([]);
  }

  private applyState(state: LiveState): void {
    this.stateStore.set(state);
    if (state.speakers.includes(this.me.id)) this.invitedStore.set(true);
    else if (get(this.invitedStore) && !this.publishPc) this.invitedStore.set(false);
    if (state.status === "ended") {
      this.phaseStore.set("ended");
      this.closePublishing();
      this.closeViewing();
      return;
    }
    if (this.publishPc && !state.publishers.some((p) => p.user.id === this.me.id)) {
      // Stopped by the host (or the server lost the peer): devices off.
      this.closePublishing();
      this.invitedStore.set(false);
    }
    const key = publishedKey(state);
    const others = state.publishers.some((p) => p.user.id !== this.me.id);
    if (key !== this.viewKey) {
      if (!others) this.stopWatching();
      else void this.subscribe();
    }
  }

  /** Subscribes (again) to what is published now; one negotiation at a time, the latest state wins. */
  private subscribe(): Promise<void> {
    if (this.subscribing) {
      this.resubscribe = true;
      return this.subscribing;
    }
    this.subscribing = (async () => {
      do {
        this.resubscribe = false;
        await this.subscribeOnce();
      } while (this.resubscribe && !this.stopped);
    })().finally(() => (this.subscribing = null));
    return this.subscribing;
  }

  private async subscribeOnce(): Promise<void> {
    const state = get(this.stateStore);
    const key = publishedKey(state);
    if (!state || !key || this.stopped || key === this.viewKey) return;
    const pc = this.media.peer({ iceServers: this.iceServers });
    // One receiving section per published track, in the server's order (it matches them by kind, in order).
    for (const p of state.publishers) {
      for (const t of p.tracks) preferForwardedCodecs(pc.addTransceiver(t.kind, { direction: "recvonly" }), t.kind);
    }
    const received = new Map<string, MediaStreamTrack>();
    pc.addEventListener("track", (e) => {
      if (e.transceiver.mid !== null) received.set(e.transceiver.mid, e.track);
    });
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const ack = await this.socket.emit<AnswerAck>("live:subscribe", { session_id: this.sessionId, sdp: pc.localDescription?.sdp ?? "" });
      await pc.setRemoteDescription({ type: "answer", sdp: ack.sdp });
      if (this.stopped) {
        pc.close();
        return;
      }
      this.viewPc?.close();
      this.viewPc = pc;
      this.viewKey = key;
      this.errorStore.set(null);
      this.feedsStore.set(feedsOf(ack.tracks ?? [], received, this.me.id));
    } catch (e) {
      pc.close();
      this.viewKey = key; // not again until what is published changes (or "Try again")
      this.errorStore.set(refusal("The live video cannot be shown", e));
    }
  }

  /** After a refusal (e.g. the server carried as many viewers as it can): subscribe again. */
  retryWatching(): Promise<void> {
    this.viewKey = "";
    this.errorStore.set(null);
    return this.subscribe();
  }
}

/** The streams to show: each publisher's camera (with their microphone) and screen; one's own left out. */
export function feedsOf(
  tracks: { mid: string; kind: string; source: RemoteFeed["source"]; user: LiveUser }[],
  received: Map<string, MediaStreamTrack>,
  myId: string,
): RemoteFeed[] {
  const feeds = new Map<string, RemoteFeed>();
  const mics: { user: LiveUser; track: MediaStreamTrack }[] = [];
  for (const t of tracks) {
    const track = received.get(t.mid);
    if (!track || t.user.id === myId) continue;
    if (t.source === "microphone") {
      mics.push({ user: t.user, track });
      continue;
    }
    const key = `${t.user.id}:${t.source}`;
    feeds.set(key, { key, user: t.user, source: t.source, stream: new MediaStream([track]) });
  }
  for (const { user, track } of mics) {
    const camera = feeds.get(`${user.id}:camera`);
    if (camera) camera.stream.addTrack(track);
    else feeds.set(`${user.id}:microphone`, { key: `${user.id}:microphone`, user, source: "microphone", stream: new MediaStream([track]) });
  }
  return [...feeds.values()];
}

/** One person in a session's attendance (GET /live-sessions/{id}/attendance). */
export interface Attendee {
  user: LiveUser;
  first_joined_at: string;
  last_left_at: string | null;
  present_s: number;
  stretches: { joined_at: string; left_at: string | null }[];
}
