import { describe, expect, it } from "vitest";

import { ApiClient } from "../src/lib/api";
import { ApiError } from "../src/lib/errors";
import { memoryStore } from "../src/lib/tokens";

/** A stand-in for the server's auth endpoints: tokens rotate, a spent refresh token is refused. */
class FakeServer {
  generation = 0;
  valid = new Set<string>();
  refreshTokens = new Set<string>(["r0"]);
  refreshCalls = 0;
  calls: string[] = [];
  down = false;

  issue(): { access_token: string; refresh_token: string; token_type: string; expires_in: number } {
    this.generation += 1;
    const access = `a${this.generation}`;
    const refresh = `r${this.generation}`;
    this.valid.add(access);
    this.refreshTokens.add(refresh);
    return { access_token: access, refresh_token: refresh, token_type: "bearer", expires_in: 900 };
  }

  expireAll(): void {
    this.valid.clear();
  }

  fetch: typeof fetch = async (input, init) => {
    const url = String(input);
    this.calls.push(`${init?.method} ${url}`);
    if (this.down) throw new TypeError("Failed to fetch");
    const json = (status: number, body: unknown): Response =>
      new Response(body === null ? null : JSON.stringify(body), {
        status,
        headers: { "content-type": "application/json" },
      });
    if (url.endsWith("/auth/refresh")) {
      this.refreshCalls += 1;
      await new Promise((resolve) => setTimeout(resolve, 5)); // let concurrent calls pile up
      const { refresh_token } = JSON.parse(String(init?.body)) as { refresh_token: string };
      if (!this.refreshTokens.delete(refresh_token)) {
        return json(401, { error: { code: "unauthorized", message: "refresh token is invalid" } });
      }
      const user = { id: "u1", email: "a@example.com", display_name: "Ada", role: "student" };
      return json(200, { ...this.issue(), user });
    }
    if (url.endsWith("/auth/login")) return json(200, this.issue());
    if (url.endsWith("/auth/logout")) return json(204, null);
    const auth = new Headers(init?.headers).get("Authorization") ?? "";
    if (!this.valid.has(auth.replace("Bearer ", ""))) {
      return json(401, { error: { code: "unauthorized", message: "access token expired" } });
    }
    if (url.endsWith("/boom")) return json(500, { error: { code: "internal", message: "internal error; it has been logged" } });
    return json(200, { ok: true, token: auth });
  };
}

function client(server: FakeServer, stored: string | null = "r0") {
  const signedOut: string[] = [];
  const store = memoryStore(stored);
  const api = new ApiClient({ store, fetch: server.fetch, onSignedOut: (why) => signedOut.push(why) });
  return { api, store, signedOut };
}

describe("ApiClient token refresh", () => {
  it("restores a session from the stored refresh token and rotates it", async () => {
    const server = new FakeServer();
    const { api, store } = client(server);
    expect(await api.restore()).toBe(true);
    expect(api.accessToken).toBe("a1");
    expect(store.read()).toBe("r1");
    expect(api.user?.display_name).toBe("Ada"); // the refresh answer names the account: no /me needed
  });

  it("refreshes once on a 401 and repeats the call", async () => {
    const server = new FakeServer();
    const { api, signedOut } = client(server, null);
    await api.login("a@example.com", "pw");
    server.expireAll();
    const answer = await api.get<{ token: string }>("/me");
    expect(answer.token).toBe("Bearer a2");
    expect(server.refreshCalls).toBe(1);
    expect(signedOut).toEqual([]);
  });

  it("shares one refresh among calls refused together", async () => {
    const server = new FakeServer();
    const { api, signedOut } = client(server, null);
    await api.login("a@example.com", "pw");
    server.expireAll();
    const answers = await Promise.all([api.get("/a"), api.get("/b"), api.get("/c"), api.get("/d")]);
    expect(answers).toHaveLength(4);
    // Two refreshes with the same token would be reuse: the server would revoke the whole login.
    expect(server.refreshCalls).toBe(1);
    expect(signedOut).toEqual([]);
  });

  it("does not refresh again when another call already replaced the refused token", async () => {
    const server = new FakeServer();
    const { api } = client(server, null);
    await api.login("a@example.com", "pw");
    server.expireAll();
    await api.get("/a");
    expect(await api.refresh("a1")).toBe(true); // a1 is stale: a2 replaced it
    expect(server.refreshCalls).toBe(1);
  });

  it("signs out when the refresh is refused, and says why", async () => {
    const server = new FakeServer();
    const { api, store, signedOut } = client(server, null);
    await api.login("a@example.com", "pw");
    server.expireAll();
    server.refreshTokens.clear(); // the login was revoked elsewhere
    await expect(api.get("/me")).rejects.toMatchObject({ status: 401 });
    expect(signedOut).toEqual(["Your session has ended. Please log in again."]);
    expect(store.read()).toBeNull();
    expect(api.accessToken).toBeNull();
  });

  it("keeps the session when the server cannot be reached", async () => {
    const server = new FakeServer();
    const { api, store, signedOut } = client(server);
    server.down = true;
    await expect(api.restore()).rejects.toMatchObject({ code: "network" });
    expect(store.read()).toBe("r0");
    expect(signedOut).toEqual([]);
  });

  it("shows a server error as its message, without signing out", async () => {
    const server = new FakeServer();
    const { api, signedOut } = client(server, null);
    await api.login("a@example.com", "pw");
    const error = await api.get("/boom").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).message).toBe("internal error; it has been logged");
    expect(signedOut).toEqual([]);
  });

  it("logs out by revoking the refresh token on the server", async () => {
    const server = new FakeServer();
    const { api, store } = client(server, null);
    await api.login("a@example.com", "pw");
    await api.logout();
    expect(server.calls.at(-1)).toBe("POST /api/v1/auth/logout");
    expect(store.read()).toBeNull();
    expect(api.accessToken).toBeNull();
  });

  it("reads the newest stored token under the lock (another tab may have rotated it)", async () => {
    const server = new FakeServer();
    const { api, store } = client(server);
    const rotatedElsewhere = server.issue(); // tab B refreshed with r0 and stored r1
    server.refreshTokens.delete("r0");
    store.write(rotatedElsewhere.refresh_token);
    expect(await api.restore()).toBe(true); // uses r1, not the r0 this tab started with
    expect(store.read()).toBe("r2");
  });
});
