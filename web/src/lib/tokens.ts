/**
 * Where the refresh token lives between page loads, and how tabs take turns refreshing it.
 *
 * The access token is kept in memory only (src/lib/api.ts). The refresh token is kept in localStorage, so a
 * reload or a second tab stays signed in (docs/web.md, "Sessions", says why not a cookie). Refresh tokens
 * rotate and the server treats a spent one presented again as theft (it signs out the whole login), so two
 * tabs must never refresh with the same token: refreshes run one at a time across tabs under a Web Lock,
 * and each reads the newest token only once it holds the lock.
 */

export interface RefreshStore {
  read(): string | null;
  write(token: string | null): void;
  /** Calls `listener` when another tab changes the token (null: it signed out); returns an unsubscribe. */
  watch(listener: (token: string | null) => void): () => void;
}

/** Runs `fn` while holding the one refresh lock of this origin (all tabs). */
export type Lock = <T>(fn: () => Promise<T>) => Promise<T>;

export const STORAGE_KEY = "studyhall.refresh_token";
const LOCK_NAME = "studyhall.refresh";

export function browserStore(storage: Storage = window.localStorage): RefreshStore {
  return {
    read: () => storage.getItem(STORAGE_KEY),
    write: (token) => (token === null ? storage.removeItem(STORAGE_KEY) : storage.setItem(STORAGE_KEY, token)),
    watch(listener) {
      const onStorage = (event: StorageEvent): void => {
        if (event.key === STORAGE_KEY || event.key === null) listener(storage.getItem(STORAGE_KEY));
      };
      window.addEventListener("storage", onStorage);
      return () => window.removeEventListener("storage", onStorage);
    },
  };
}

/** A store in memory (tests; browsers without localStorage). */
export function memoryStore(initial: string | null = null): RefreshStore {
  let token = initial;
  return {
    read: () => token,
    write: (value) => {
      token = value;
    },
    watch: () => () => {},
  };
}

/** The Web Locks API where the browser has it; otherwise no lock (one tab is then still safe). */
export function browserLock(): Lock {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  if (!locks) return (fn) => fn();
  return <T>(fn: () => Promise<T>) => locks.request(LOCK_NAME, () => fn()) as Promise<T>;
}
