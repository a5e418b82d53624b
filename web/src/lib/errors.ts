/** The one error type views show: the server's `{error: {code, message, details}}`, or a network failure. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: Record<string, unknown>;

  constructor(status: number, code: string, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }

  static network(): ApiError {
    return new ApiError(0, "network", "Cannot reach the server. Check your connection and try again.");
  }

  static signedOut(): ApiError {
    return new ApiError(401, "unauthorized", "Your session has ended. Please log in again.");
  }

  /** The error a failed answer carries, whatever its body (a proxy's HTML 502 included). */
  static async fromResponse(res: Response): Promise<ApiError> {
    let body: unknown = null;
    try {
      body = await res.json();
    } catch {
      // not JSON: fall through to the status text
    }
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
    if (error && typeof error.message === "string") {
      const details = typeof error.details === "object" && error.details !== null ? error.details : {};
      return new ApiError(res.status, String(error.code ?? "error"), error.message, details as Record<string, unknown>);
    }
    const reason = res.status >= 500 ? "The server could not answer" : "The request was refused";
    return new ApiError(res.status, "http_" + res.status, `${reason} (HTTP ${res.status}). Please try again.`);
  }
}

/** A message for anything a view caught: an ApiError's own, or a generic one (never a blank screen). */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message + fieldErrors(error.details);
  if (error instanceof Error && error.message) return `Something went wrong: ${error.message}`;
  return "Something went wrong. Please try again.";
}

/** The fields a refused body names (`details.fields: [{loc, msg}]`, core_api/http.py), as " (title: …; …)". */
function fieldErrors(details: Record<string, unknown>): string {
  const fields = details["fields"];
  if (!Array.isArray(fields)) return "";
  const parts = fields
    .filter((f): f is { loc: unknown; msg: unknown } => typeof f === "object" && f !== null)
    .map((f) => `${String(f.loc)}: ${String(f.msg)}`);
  return parts.length ? ` (${parts.join("; ")})` : "";
}
