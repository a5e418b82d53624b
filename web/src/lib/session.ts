/**
 * The app's client layer, assembled once: the REST client, the Socket.IO connection, the signed-in user
 * and the notifications. Views import these and subscribe to the stores; they never call `fetch` or
 * `io()` themselves.
 */
import { writable, type Readable } from "svelte/store";

import { ApiClient, type User } from "./api";
import { LiveConnection } from "./live";
import { Rejoiner } from "./rejoin";
import { NotificationsStore } from "./notifications";
import { browserLock, browserStore, memoryStore } from "./tokens";

function refreshStore() {
  try {
    window.localStorage.getItem("probe");
    return browserStore();
  } catch {
    return memoryStore(); // storage disabled: a reload asks for the password again
  }
}

export const api = new ApiClient({ store: refreshStore(), lock: browserLock() });
export const live = new LiveConnection(api);
/** Rejoins every open room in one `room:join_many` after a reconnect. */
export const rejoiner = new Rejoiner(live);
export const notifications = new NotificationsStore(api, live);

const meStore = writable<User | null>(null);
/** The signed-in user (null when signed out). */
export const me: Readable<User | null> = meStore;

const noticeStore = writable<string | null>(null);
/** A message for the login page after a session ended on its own ("Your session has ended…"). */
export const notice: Readable<string | null> = noticeStore;

export type Phase = "starting" | "signed-in" | "signed-out";
const phaseStore = writable<Phase>("starting");
export const phase: Readable<Phase> = phaseStore;

api.onSignedOut = (reason) => {
  noticeStore.set(reason);
  stopSession();
};

async function startSession(): Promise<void> {
  live.start(); // connect while /me is read: a room screen can join as soon as it shows
  let user: User;
  try {
    // A resumed session's refresh answer names the account: no /me round trip before the first screen.
    user = api.user ?? (await api.get<User>("/me"));
  } catch (error) {
    live.stop();
    throw error;
  }
  meStore.set(user);
  phaseStore.set("signed-in");
  // The bell's count; a failure here shows 0 rather than blocking the app.
  notifications.start().catch(() => {});
}

function stopSession(): void {
  live.stop();
  notifications.stop();
  meStore.set(null);
  phaseStore.set("signed-out");
}

/**
 * On page load: resume the stored session, if any. Network failures leave the stored session in place.
 *
 * The round trips overlap: the websocket opens while the refresh token is exchanged (its handshake sends the
 * new access token as soon as there is one), and the refresh answer names the account, so the first screen
 * shows without a `/me` after it (docs/web.md, "Sessions").
 */
export async function boot(): Promise<void> {
  live.on<User>("me:changed", (user) => meStore.set(user)); // a role granted or a name changed elsewhere shows at once
  try {
    if (api.hasStoredSession()) {
      const restoring = api.restore();
      live.start(restoring);
      if (await restoring) {
        await startSession();
        return;
      }
      live.stop();
    }
  } catch (error) {
    live.stop();
    noticeStore.set((error as Error).message);
  }
  phaseStore.set("signed-out");
}

export async function logIn(email: string, password: string): Promise<void> {
  await api.login(email, password);
  noticeStore.set(null);
  await startSession();
}

export async function register(displayName: string, email: string, password: string): Promise<void> {
  await api.register(displayName, email, password);
  await logIn(email, password);
}

export async function logOut(): Promise<void> {
  await api.logout();
  noticeStore.set(null);
  stopSession();
}

/** The account as the server answered a change to it (PATCH /me); other tabs hear `me:changed`. */
export function updateMe(user: User): void {
  meStore.set(user);
}

/** Show ``message`` on the login page (after a password reset, say). */
export function showNotice(message: string): void {
  noticeStore.set(message);
}

export function clearNotice(): void {
  noticeStore.set(null);
}
