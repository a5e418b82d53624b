/** Changing one's display name (`PATCH /me`), and the checks the form makes before asking the server. */
import type { ApiClient, User } from "./api";

export const MAX_DISPLAY_NAME = 80;

/** What the server would store: NFKC, trimmed, single spaces (the server checks the rest). */
export function cleanName(value: string): string {
  return value.normalize("NFKC").split(/\s+/u).filter(Boolean).join(" ");
}

/** Why a name would be refused before sending it, or null. */
export function nameProblem(value: string): string | null {
  const name = cleanName(value);
  if (!name) return "Enter a display name.";
  if ([...name].length > MAX_DISPLAY_NAME) return `At most ${MAX_DISPLAY_NAME} characters.`;
  if (/[\p{Cc}\p{Cf}\p{Co}\p{Zl}\p{Zp}]/u.test(name)) return "No control or invisible characters.";
  if (!/[\p{L}\p{N}]/u.test(name)) return "Use at least one letter or digit.";
  return null;
}

export const renameMe = (api: ApiClient, displayName: string): Promise<User> =>
  api.request<User>("PATCH", "/me", { body: { display_name: cleanName(displayName) } });

export const MAX_BIO = 1000;

export const saveBio = (api: ApiClient, bio: string): Promise<User> =>
  api.request<User>("PATCH", "/me", { body: { bio: bio.trim() } });

/** Upload a picture (the server re-encodes it to a 256x256 PNG). */
export const setAvatar = (api: ApiClient, file: Blob): Promise<User> =>
  api.request<User>("PUT", "/me/avatar", { body: file });

export const removeAvatar = (api: ApiClient): Promise<User> => api.request<User>("DELETE", "/me/avatar");
