/**
 * The REST client: every call to /api/v1 goes through `ApiClient.request`.
 *
 * - The access token lives in this object only (never in storage): a reload gets a new one from the refresh
 *   token (`restore`).
 * - A 401 refreshes once (one refresh at a time, shared by the calls that failed together) and repeats the
 *   call; a second 401, or a refused refresh, signs out locally and calls `onSignedOut` (the app then shows
 *   /login). A network failure or a 5xx never signs out: the caller gets an `ApiError` to show.
 * - `logout` revokes the refresh token on the server (the whole login), then forgets it here.
 */
import { writable, type Readable } from "svelte/store";

import { ApiError } from "./errors";
import type { Lock, RefreshStore } from "./tokens";

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  /** The account (the refresh answer carries it; the login answer may not). */
  user?: User | null;
}

export interface User {
  id: string;
  email: string;
  display_name: string;
  role: "student" | "instructor" | "admin";
  created_at?: string;
  bio?: string;
  avatar_url?: string | null;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

/** Query-string values; an array repeats its key (`{ tag: ["a", "b"] }` → `?tag=a&tag=b`). */
export type Query = Record<string, string | number | boolean | null | undefined | readonly string[]>;

export interface RequestOptions {
  body?: unknown;
  query?: Query;
  /** Send the access token (default); `false` for the sign-in endpoints. */
  auth?: boolean;
  signal?: AbortSignal;
  /** Answer the body as a Blob (a download) instead of JSON or text. */
  blob?: boolean;
}

export interface ApiOptions {
  store: RefreshStore;
  lock?: Lock;
  /** Base of the API; the app is served on the same origin, so the default is relative. */
  base?: string;
  fetch?: typeof fetch;
  /** Called once when the session ends without the user asking (refresh refused, or another tab signed out). */
  onSignedOut?: (reason: string) => void;
}

export class ApiClient {
  private access: string | null = null;
  private account: User | null = null;
  private refreshing: Promise<boolean> | null = null;
  private readonly base: string;
  private readonly fetcher: typeof fetch;
  private readonly lock: Lock;
  private readonly store: RefreshStore;
  private readonly signedInStore = writable(false);
  onSignedOut: (reason: string) => void;

  constructor(options: ApiOptions) {
    this.store = options.store;
    this.lock = options.lock ?? ((fn) => fn());
    this.base = options.base ?? "/api/v1";
    this.fetcher = options.fetch ?? ((input, init) => fetch(input, init));
    this.onSignedOut = options.onSignedOut ?? (() => {});
    this.store.watch((token) => {
      if (token === null && this.access !== null) this.forget("You signed out in another tab.");
    });
  }

  /** Whether this client holds a session (an access token). */
  get signedIn(): Readable<boolean> {
    return this.signedInStore;
  }

  /** The current access token, for the Socket.IO handshake and websocket tickets. */
  get accessToken(): string | null {
    return this.access;
  }

  /** The account the last token pair was issued for, when its answer named it (saves a `GET /me`). */
  get user(): User | null {
    return this.account;
  }

  /** Whether a refresh token is stored (a session may be restored without asking for a password). */
  hasStoredSession(): boolean {
    return this.store.read() !== null;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const auth = options.auth ?? true;
    if (auth && this.access === null && !(await this.refresh(null))) throw ApiError.signedOut();
    const sentWith = this.access;
    let res = await this.send(method, path, options, auth);
    if (res.status === 401 && auth) {
      if (await this.refresh(sentWith)) {
        res = await this.send(method, path, options, auth);
      }
      if (res.status === 401) {
        this.forget("Your session has ended. Please log in again.");
        throw await ApiError.fromResponse(res);
      }
    }
    if (!res.ok) throw await ApiError.fromResponse(res);
    if (res.status === 204) return undefined as T;
    if (options.blob) return (await res.blob()) as T;
    const type = res.headers.get("content-type") ?? "";
    return (type.includes("json") ? await res.json() : await res.text()) as T;
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.request<T>("GET", path, { query });
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>("POST", path, { body });
  }

  async register(displayName: string, email: string, password: string): Promise<User> {
    return this.request<User>("POST", "/auth/register", {
      auth: false,
      body: { display_name: displayName, email, password },
    });
  }

  async login(email: string, password: string): Promise<void> {
    const pair = await this.request<TokenPair>("POST", "/auth/login", { auth: false, body: { email, password } });
    this.accept(pair);
  }

  /** Ends the session: the server revokes the refresh token (and its family), then this client forgets it. */
  async logout(): Promise<void> {
    const token = this.store.read();
    this.access = null;
    this.store.write(null);
    this.signedInStore.set(false);
    if (token !== null) {
      try {
        await this.request<void>("POST", "/auth/logout", { auth: false, body: { refresh_token: token } });
      } catch {
        // Signed out here either way; a token the server could not revoke now expires on its own.
      }
    }
  }

  /** On start: a new access token from the stored refresh token; false when there is no session. */
  async restore(): Promise<boolean> {
    if (!this.hasStoredSession()) return false;
    return this.refresh(null);
  }

  /**
   * A new token pair from the refresh token. `stale` is the access token a call was refused with: when
   * another call already replaced it, that refresh is reused. Resolves false (and signs out) when the server
   * refuses the refresh token; rejects with an `ApiError` when it could not be asked (network, 5xx).
   */
  refresh(stale: string | null): Promise<boolean> {
    if (stale !== null && this.access !== null && this.access !== stale) return Promise.resolve(true);
    if (this.refreshing === null) {
      this.refreshing = this.lock(() => this.refreshNow()).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async refreshNow(): Promise<boolean> {
    // Read under the lock: another tab may have rotated the token while this one waited.
    const token = this.store.read();
    if (token === null) {
      this.forget("Please log in.");
      return false;
    }
    const res = await this.send("POST", "/auth/refresh", { body: { refresh_token: token } }, false);
    if (res.ok) {
      this.accept((await res.json()) as TokenPair);
      return true;
    }
    if (res.status === 400 || res.status === 401) {
      if (this.store.read() === token) this.store.write(null);
      this.forget("Your session has ended. Please log in again.");
      return false;
    }
    throw await ApiError.fromResponse(res);
  }

  private accept(pair: TokenPair): void {
    this.access = pair.access_token;
    this.account = pair.user ?? null;
    this.store.write(pair.refresh_token);
    this.signedInStore.set(true);
  }

  /** Drops the session here (not on the server) and tells the app once. */
  private forget(reason: string): void {
    const had = this.access !== null;
    this.access = null;
    this.account = null;
    this.signedInStore.set(false);
    if (had) this.onSignedOut(reason);
  }

  private async send(method: string, path: string, options: RequestOptions, auth: boolean): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (auth && this.access !== null) headers["Authorization"] = `Bearer ${this.access}`;
    let body: string | Blob | undefined;
    if (options.body instanceof Blob) {
      headers["Content-Type"] = options.body.type || "application/octet-stream"; // a file, sent as it is
      body = options.body;
    } else if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    try {
      return await this.fetcher(this.base + path + queryString(options.query), {
        method,
        headers,
        body,
        signal: options.signal,
        credentials: "omit",
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw ApiError.network();
    }
  }
}

export function queryString(query: Query | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (Array.isArray(value)) for (const item of value) params.append(key, item);
    else if (value !== null && value !== undefined) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? "?" + text : "";
}
